use super::*;

fn proc(pid: u32, mib: f64) -> Proc {
    Proc {
        pid,
        rss_bytes: (mib * 1024.0 * 1024.0) as u64,
        fds: 40,
        cpu_s: 0.0,
    }
}

/// A run of `minutes` sampled every 10 s, with one process whose RSS is `f(t)`.
fn run(minutes: u32, f: impl Fn(f64) -> (u32, f64)) -> Vec<Sample> {
    (0..=minutes * 6)
        .map(|i| {
            let t = f64::from(i) * 10.0;
            let (pid, mib) = f(t);
            let mut s = Sample {
                t,
                ..Sample::default()
            };
            s.procs.insert("gatherer-1".into(), proc(pid, mib));
            s
        })
        .collect()
}

#[test]
fn slope_of_a_line_is_its_gradient() {
    let pts: Vec<(f64, f64)> = (0..10)
        .map(|i| (f64::from(i), 3.0 * f64::from(i) + 1.0))
        .collect();
    assert!((slope(&pts).unwrap() - 3.0).abs() < 1e-9);
    assert_eq!(slope(&pts[..2]), None);
    assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]), None);
}

#[test]
fn a_leak_is_measured_over_the_second_half() {
    // Flat for 30 minutes, then 2 MiB per 10 minutes: the second half shows it.
    let s = run(60, |t| {
        (
            7,
            if t < 1800.0 {
                100.0
            } else {
                100.0 + (t - 1800.0) / 300.0
            },
        )
    });
    let f = &rss_figures(&s, &Goals::default())[0];
    let slope = f.slope_mib_per_10min.unwrap();
    assert!((slope - 2.0).abs() < 0.01, "{slope}");
    assert_eq!(f.restarts, 0);
    let v = verdict(
        std::slice::from_ref(f),
        &[],
        &[],
        &Goals::default(),
        true,
        true,
    );
    assert!(!v.ok(), "a 2 MiB/10 min leak fails the 1 MiB goal");
    // Growth only in the first half (warm-up) is no leak.
    let s = run(60, |t| {
        (7, if t < 1200.0 { 50.0 + t / 20.0 } else { 110.0 })
    });
    let f = &rss_figures(&s, &Goals::default())[0];
    assert!(f.slope_mib_per_10min.unwrap().abs() < 1e-9);
    assert!(
        verdict(
            std::slice::from_ref(f),
            &[],
            &[],
            &Goals::default(),
            true,
            true
        )
        .ok()
    );
}

#[test]
fn a_restart_is_never_read_as_growth_or_as_a_fall() {
    // Restarted at 50 min: the new life's warm-up (fast growth from 20 MiB) is not judged, and
    // the life before it (30..50 min of the second half) is judged on its own: flat.
    let s = run(60, |t| {
        if t < 3000.0 {
            (7, 100.0)
        } else {
            (8, 20.0 + (t - 3000.0) / 10.0)
        }
    });
    let f = &rss_figures(&s, &Goals::default())[0];
    assert_eq!(f.restarts, 1);
    assert!(f.slope_mib_per_10min.unwrap().abs() < 1e-9, "{f:?}");
    assert!((f.judged_seconds - 1200.0).abs() < 11.0, "{f:?}");
    // Restarted every 8 minutes: nothing is long enough to judge, and it says so.
    let s = run(60, |t| (1 + (t / 480.0) as u32, 100.0 + (t % 480.0) / 10.0));
    let f = &rss_figures(&s, &Goals::default())[0];
    assert_eq!(f.slope_mib_per_10min, None);
    let v = verdict(
        std::slice::from_ref(f),
        &[],
        &[],
        &Goals::default(),
        true,
        true,
    );
    assert!(v.checks[0].2.contains("not judged"), "{:?}", v.checks);
}

#[test]
fn fault_windows_include_the_grace_and_the_sample_width() {
    let faults = [Fault {
        name: "ws-stall".into(),
        start: 100.0,
        end: 120.0,
    }];
    // A 5 s sample ending at t covers (t-5, t].
    assert!(
        !in_fault(100.0, 5.0, &faults, 15.0),
        "ends as the fault starts"
    );
    assert!(in_fault(101.0, 5.0, &faults, 15.0));
    assert!(in_fault(139.0, 5.0, &faults, 15.0), "within the grace");
    assert!(in_fault(139.9, 5.0, &faults, 15.0));
    assert!(
        !in_fault(140.0, 5.0, &faults, 15.0),
        "starts as the grace ends"
    );
}

#[test]
fn latency_outside_faults_leaves_fault_windows_out() {
    // Calm windows: 100 rows under 10 ms. The fault window: 100 rows at about 5 s.
    let bounds = [0.01, 0.1, 1.0, 10.0, f64::INFINITY];
    let buckets = |fast: f64, slow: f64| -> Vec<(f64, f64)> {
        bounds
            .iter()
            .map(|&le| (le, if le < 1.0 { fast } else { fast + slow }))
            .collect()
    };
    let mut samples = Vec::new();
    for i in 1..=20 {
        let t = f64::from(i) * 5.0;
        let mut s = Sample {
            t,
            ..Sample::default()
        };
        let b = if (50.0..=55.0).contains(&t) {
            buckets(0.0, 100.0)
        } else {
            buckets(5.0, 0.0)
        };
        s.e2e.insert("trades".into(), b);
        samples.push(s);
    }
    let faults = [Fault {
        name: "exchange-cut".into(),
        start: 46.0,
        end: 52.0,
    }];
    let goals = Goals {
        grace: 0.0,
        ..Goals::default()
    };
    let f = &latency_figures(&samples, &faults, 5.0, &goals)[0];
    assert_eq!(f.rows_calm, 5 * 18, "two windows in the fault");
    assert!(f.p99_calm.unwrap() <= 0.01, "{f:?}");
    assert!(f.p99_all.unwrap() > 0.5, "{f:?}");
    assert!(f.judged);
    let v = verdict(&[], &[], std::slice::from_ref(f), &goals, true, true);
    assert!(v.ok(), "{:?}", v.checks);
    // The same with the fault not declared: the goal fails.
    let f = &latency_figures(&samples, &[], 5.0, &goals)[0];
    assert!(!verdict(&[], &[], std::slice::from_ref(f), &goals, true, true).ok());
}

#[test]
fn creeping_lag_fails_and_fault_spikes_do_not() {
    let faults = [Fault {
        name: "partition".into(),
        start: 2400.0,
        end: 2415.0,
    }];
    let mk = |creep: f64| -> Vec<Sample> {
        (0..=720)
            .map(|i| {
                let t = f64::from(i) * 5.0;
                let mut s = Sample {
                    t,
                    ..Sample::default()
                };
                let spike = if (2405.0..2430.0).contains(&t) {
                    20.0
                } else {
                    0.0
                };
                s.lag_s
                    .insert("gatherer-1".into(), 0.2 + creep * t / 600.0 + spike);
                s
            })
            .collect()
    };
    let g = Goals::default();
    let l = lag_figures(&mk(0.0), &faults, 5.0, &g);
    assert!(l[0].slope_per_10min.unwrap().abs() < 1e-9, "{l:?}");
    assert!(l[0].max_s > 20.0 && l[0].max_calm_s < 0.3, "{l:?}");
    assert!(verdict(&[], &l, &[], &g, true, true).ok());
    let l = lag_figures(&mk(1.0), &faults, 5.0, &g);
    assert!(!verdict(&[], &l, &[], &g, true, true).ok(), "{l:?}");
}

#[test]
fn the_audit_and_the_archive_decide_too() {
    let g = Goals::default();
    assert!(verdict(&[], &[], &[], &g, true, true).ok());
    assert!(!verdict(&[], &[], &[], &g, false, true).ok());
    assert!(!verdict(&[], &[], &[], &g, true, false).ok());
}

#[test]
fn a_sample_reads_back_with_its_infinite_bucket() {
    let mut s = Sample {
        t: 5.0,
        ..Sample::default()
    };
    s.e2e
        .insert("trades".into(), vec![(0.01, 3.0), (f64::INFINITY, 4.0)]);
    let text = serde_json::to_string(&s).unwrap_or_default();
    let back: Sample = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(back.e2e["trades"], vec![(0.01, 3.0), (f64::INFINITY, 4.0)]);
}

#[test]
fn the_harness_and_postgresql_are_shown_not_judged() {
    let s = run(60, |t| (7, 100.0 + t / 60.0));
    let mut f = rss_figures(&s, &Goals::default())[0].clone();
    assert!(
        !verdict(
            std::slice::from_ref(&f),
            &[],
            &[],
            &Goals::default(),
            true,
            true
        )
        .ok()
    );
    for name in ["kalshi-sim", "moto (S3)", "pg:production"] {
        f.name = name.into();
        let v = verdict(
            std::slice::from_ref(&f),
            &[],
            &[],
            &Goals::default(),
            true,
            true,
        );
        assert!(
            v.ok() && v.checks[0].2.contains("not judged"),
            "{:?}",
            v.checks
        );
    }
}

#[test]
fn cpu_is_counted_within_a_life_and_busy_share_split_by_slow_windows() {
    // 1.5 s of CPU per 10 s: 0.15 cores; a restart (new pid, counter from zero) is skipped,
    // and so is a cluster whose counter fell (a backend exited).
    let mut s = run(2, |t| (if t < 60.0 { 7 } else { 8 }, 100.0));
    for x in s.iter_mut() {
        let p = x.procs.get_mut("gatherer-1").unwrap();
        p.cpu_s = if x.t < 60.0 {
            x.t * 0.15
        } else {
            (x.t - 60.0) * 0.15
        };
        x.cpu_busy = Some(if x.t == 30.0 { 0.95 } else { 0.5 });
        let mut pg = proc(9, 50.0);
        // A backend with 10 s of CPU exits just before t = 40: the sum falls once.
        pg.cpu_s = x.t * 0.3 - if x.t >= 40.0 { 10.0 } else { 0.0 };
        x.procs.insert("pg:g1".into(), pg);
        let slow = x.t == 30.0;
        x.e2e.insert(
            "trades".into(),
            vec![(0.1, if slow { 0.0 } else { 100.0 }), (1.0, 100.0)],
        );
    }
    let f = cpu_figures(&s);
    let g = f.iter().find(|c| c.name == "gatherer-1").unwrap();
    assert!(
        (g.mean_cores - 0.15).abs() < 1e-9 && (g.peak_cores - 0.15).abs() < 1e-9,
        "{g:?}"
    );
    let pg = f.iter().find(|c| c.name == "pg:g1").unwrap();
    assert!((pg.mean_cores - 0.3).abs() < 1e-9, "{pg:?}");
    let goals = Goals {
        p99: 0.25,
        ..Goals::default()
    };
    let (calm, slow, n_slow, n) = busy_when_slow(&s, &[], 10.0, &goals, "trades");
    assert_eq!((n_slow, n), (1, 13));
    assert!((slow.unwrap() - 0.95).abs() < 1e-9);
    assert!((calm.unwrap() - (0.5 * 12.0 + 0.95) / 13.0).abs() < 1e-9);
}
