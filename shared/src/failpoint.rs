//! Failpoints: named places in the services where a test can hold a task still, to make a race
//! happen on purpose (STYLE.md 19). Compiled in only with the `failpoints` feature, which only
//! test builds enable (a crate's dev-dependency on `kalshi-shared` with the feature); without
//! it, [`hit`] is an empty inline function and nothing here exists at run time.
//!
//! ```ignore
//! let held = failpoint::arm("gatherer::read::after_mark");   // the next task there stops
//! let read = tokio::spawn(store.read(...));
//! held.reached().await;                                      // it is there now
//! /* make the other side of the race happen */
//! held.release();                                            // it goes on
//! ```
//!
//! A child process (a service binary built for the tests) is armed through the environment:
//! `KALSHI_FAILPOINTS=name,name` stops the first task at each named point for good, as if that
//! task hung there (a test then kills the process). With `KALSHI_FAILPOINT_DIR=<dir>` as well,
//! the task writes `<dir>/<name>.reached` when it gets there and goes on once
//! `<dir>/<name>.release` exists.
//!
//! It must never stop a task that no test armed.

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    use tokio::sync::Notify;

    #[derive(Default)]
    struct Point {
        reached: Notify,
        release: Notify,
    }

    fn points() -> &'static Mutex<HashMap<&'static str, Arc<Point>>> {
        static POINTS: OnceLock<Mutex<HashMap<&'static str, Arc<Point>>>> = OnceLock::new();
        POINTS.get_or_init(Default::default)
    }

    /// A failpoint armed by a test: the next task that hits it waits for [`Held::release`].
    pub struct Held {
        name: &'static str,
        point: Arc<Point>,
    }

    impl Held {
        /// Waits until a task is stopped at the point.
        pub async fn reached(&self) {
            self.point.reached.notified().await;
        }

        /// Lets the stopped task go on (and disarms the point).
        pub fn release(self) {
            drop(self);
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            if let Ok(mut p) = points().lock() {
                p.remove(self.name);
            }
            self.point.release.notify_one();
        }
    }

    /// Arms `name`: the next task to reach it stops there until the returned guard is released
    /// or dropped.
    pub fn arm(name: &'static str) -> Held {
        let point = Arc::new(Point::default());
        if let Ok(mut p) = points().lock() {
            p.insert(name, point.clone());
        }
        Held { name, point }
    }

    fn panics() -> &'static Mutex<std::collections::HashSet<&'static str>> {
        static PANICS: OnceLock<Mutex<std::collections::HashSet<&'static str>>> = OnceLock::new();
        PANICS.get_or_init(Default::default)
    }

    /// Arms `name` to panic: the next task to reach it panics (a task dying unexpectedly).
    pub fn arm_panic(name: &'static str) {
        if let Ok(mut p) = panics().lock() {
            p.insert(name);
        }
    }

    /// Names armed through `KALSHI_FAILPOINTS`, each taken by the first task to reach it.
    fn from_env() -> &'static Mutex<Vec<String>> {
        static ENV: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
        ENV.get_or_init(|| {
            Mutex::new(
                std::env::var("KALSHI_FAILPOINTS")
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )
        })
    }

    /// A place a test may stop: waits there if `name` is armed.
    pub async fn hit(name: &'static str) {
        if panics().lock().ok().is_some_and(|mut p| p.remove(name)) {
            panic!("failpoint {name}: a test asked this task to panic");
        }
        let from_env = from_env().lock().ok().is_some_and(|mut names| {
            let before = names.len();
            names.retain(|n| n != name);
            names.len() < before
        });
        if from_env {
            match std::env::var_os("KALSHI_FAILPOINT_DIR") {
                Some(dir) => {
                    let dir = std::path::PathBuf::from(dir);
                    tracing::warn!(
                        failpoint = name,
                        "failpoint armed by KALSHI_FAILPOINTS: this task waits for <name>.release"
                    );
                    let _ = std::fs::write(dir.join(format!("{name}.reached")), b"");
                    while !dir.join(format!("{name}.release")).exists() {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
                None => {
                    tracing::warn!(
                        failpoint = name,
                        "failpoint armed by KALSHI_FAILPOINTS: this task stops here for good"
                    );
                    std::future::pending::<()>().await;
                }
            }
        }
        let point = points().lock().ok().and_then(|mut p| p.remove(name));
        if let Some(point) = point {
            let released = point.release.notified();
            point.reached.notify_one();
            released.await;
        }
    }
}

#[cfg(feature = "failpoints")]
pub use armed::{Held, arm, arm_panic, hit};

/// A place a test may stop (nothing without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn hit(_name: &'static str) {}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_armed_point_holds_one_task_until_released() {
        let held = arm("t::point");
        let task = tokio::spawn(async {
            hit("t::point").await;
            hit("t::point").await; // disarmed after the first: passes
            7
        });
        held.reached().await;
        assert!(!task.is_finished());
        held.release();
        assert_eq!(task.await.ok(), Some(7));
    }
}
