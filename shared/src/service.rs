//! The one service skeleton both services run on: named task groups, supervision, one ordered
//! stop under one deadline, and the handle a caller (main, a test, the stack) holds.
//!
//! - A [`Group`] is a set of tasks that stop together (servers, intake, writers, ...). Its
//!   token is cancelled when the group is asked to stop; its tasks end on it.
//! - [`Supervisor::run`] waits for a shutdown request or for any task to end before its group
//!   was asked to stop (an error, a panic, or just returning). Either way it then stops the
//!   groups in the order they were added, each after the previous one has ended, all within
//!   one deadline; tasks still running when the deadline passes are aborted and named.
//! - [`Service`] is the handle: [`Service::stop`] requests the shutdown and waits,
//!   [`Service::wait`] only waits, [`Service::shutdown_token`] is for the signal handler.
//!
//! It owns task lifetimes, never the work: it must never retry or restart a task (a task that
//! ends early ends the process, and systemd restarts it), and never leave a task running after
//! [`Supervisor::run`] returned.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// Why a service stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum TaskEnded {
    #[error("task {group}/{task} ended unexpectedly with an error: {error:#}")]
    Failed {
        group: &'static str,
        task: String,
        error: anyhow::Error,
    },
    #[error("task {group}/{task} panicked: {message}")]
    Panicked {
        group: &'static str,
        task: String,
        message: String,
    },
    #[error("task {group}/{task} ended unexpectedly (before shutdown)")]
    Ended { group: &'static str, task: String },
}

/// What a group does when the stop begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Cancelled when its turn comes, after every group before it has ended.
    InTurn,
    /// Cancelled as soon as the stop begins (servers stop accepting), but waited for in turn.
    Early,
}

/// A set of tasks that stop together. Cheap to clone; tasks may be added while running.
#[derive(Clone)]
pub struct Group {
    name: &'static str,
    stop: Stop,
    token: CancellationToken,
    tracker: TaskTracker,
    aborts: Arc<Mutex<Vec<(String, AbortHandle)>>>,
    ended: mpsc::UnboundedSender<TaskEnded>,
    /// Cancelled when the service begins to stop: a task that ends then (a writer whose
    /// input closed because the intake stopped before it) ends as expected.
    stopping: CancellationToken,
}

impl Group {
    /// The group's name (in logs and errors).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Cancelled when the group is asked to stop.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns a task that must run until its group is asked to stop: ending earlier (even
    /// with `Ok`) stops the service with an error.
    pub fn spawn<F>(&self, task: impl Into<String>, fut: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn_inner(None, task.into(), fut, true);
    }

    /// Spawns a task that may finish (`Ok`) whenever its work is done; an error or a panic
    /// still stops the service.
    pub fn spawn_once<F>(&self, task: impl Into<String>, fut: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn_inner(None, task.into(), fut, false);
    }

    /// [`Group::spawn`] on another runtime (the gatherer's writers run on their own thread,
    /// so that busy socket readers cannot delay their database replies). The group still
    /// supervises the task from the runtime it was created on.
    pub fn spawn_on<F>(&self, rt: &tokio::runtime::Handle, task: impl Into<String>, fut: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn_inner(Some(rt), task.into(), fut, true);
    }

    fn spawn_inner<F>(
        &self,
        rt: Option<&tokio::runtime::Handle>,
        task: String,
        fut: F,
        until_stop: bool,
    ) where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let span = tracing::info_span!("task", group = self.name, task = %task);
        let handle: JoinHandle<anyhow::Result<()>> = match rt {
            Some(rt) => rt.spawn(fut.instrument(span)),
            None => tokio::spawn(fut.instrument(span)),
        };
        if let Ok(mut aborts) = self.aborts.lock() {
            aborts.retain(|(_, a)| !a.is_finished());
            aborts.push((task.clone(), handle.abort_handle()));
        }
        let (group, token, ended) = (self.name, self.token.clone(), self.ended.clone());
        let stopping = self.stopping.clone();
        self.tracker.spawn(async move {
            let outcome = match handle.await {
                Ok(Ok(())) if !until_stop || token.is_cancelled() || stopping.is_cancelled() => {
                    return;
                }
                Ok(Ok(())) => TaskEnded::Ended { group, task },
                Ok(Err(error)) if token.is_cancelled() || stopping.is_cancelled() => {
                    tracing::warn!(group, task, error = %format!("{error:#}"), "task ended with an error while stopping");
                    return;
                }
                Ok(Err(error)) => TaskEnded::Failed { group, task, error },
                Err(e) if e.is_cancelled() => return,
                Err(e) => TaskEnded::Panicked {
                    group,
                    task,
                    message: panic_message(e),
                },
            };
            tracing::error!(error = %outcome, "a task ended unexpectedly: stopping the service");
            let _ = ended.send(outcome);
        });
    }

    /// Tasks of this group still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    fn abort_all(&self) -> Vec<String> {
        let mut named = Vec::new();
        if let Ok(aborts) = self.aborts.lock() {
            for (task, a) in aborts.iter().filter(|(_, a)| !a.is_finished()) {
                a.abort();
                named.push(task.clone());
            }
        }
        named
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned()),
        Err(e) => e.to_string(),
    }
}

/// What `/health/live` reports: alive until the stop begins (a requested stop or a task's
/// unexpected end), with the number of tasks running in each group. The only check that may
/// replace an instance: a dependency being down (`/health/ready`) never makes it fail.
#[derive(Clone)]
pub struct Liveness {
    stopping: CancellationToken,
    groups: Vec<Group>,
}

impl Liveness {
    /// Whether the service is alive, and a JSON body naming the tasks per group.
    pub fn report(&self) -> (bool, serde_json::Value) {
        let alive = !self.stopping.is_cancelled();
        let tasks: serde_json::Map<String, serde_json::Value> = self
            .groups
            .iter()
            .map(|g| (g.name.to_owned(), serde_json::Value::from(g.len())))
            .collect();
        let body = serde_json::json!({
            "status": if alive { "alive" } else { "stopping" },
            "tasks": tasks,
        });
        (alive, body)
    }
}

/// `GET /health/live` for a service's HTTP router: 200 with [`Liveness::report`]'s body while
/// alive, 503 once the stop began.
pub fn live_router(live: Liveness) -> axum::Router {
    async fn handler(
        axum::extract::State(live): axum::extract::State<Liveness>,
    ) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
        let (alive, body) = live.report();
        let code = if alive {
            axum::http::StatusCode::OK
        } else {
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        };
        (code, axum::Json(body))
    }
    axum::Router::new()
        .route("/health/live", axum::routing::get(handler))
        .with_state(live)
}

/// Groups in stop order, the shutdown request and the deadline for the whole stop.
pub struct Supervisor {
    service: &'static str,
    shutdown: CancellationToken,
    stopping: CancellationToken,
    groups: Vec<Group>,
    ended_tx: mpsc::UnboundedSender<TaskEnded>,
    ended_rx: mpsc::UnboundedReceiver<TaskEnded>,
}

impl Supervisor {
    pub fn new(service: &'static str) -> Self {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        Supervisor {
            service,
            shutdown: CancellationToken::new(),
            stopping: CancellationToken::new(),
            groups: Vec::new(),
            ended_tx,
            ended_rx,
        }
    }

    /// Cancelling it requests the ordered stop.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// What `/health/live` reads. Take it after adding every group.
    pub fn liveness(&self) -> Liveness {
        Liveness {
            stopping: self.stopping.clone(),
            groups: self.groups.clone(),
        }
    }

    /// Adds a group; groups stop in the order they were added.
    pub fn group(&mut self, name: &'static str, stop: Stop) -> Group {
        let g = Group {
            name,
            stop,
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            aborts: Arc::new(Mutex::new(Vec::new())),
            ended: self.ended_tx.clone(),
            stopping: self.stopping.clone(),
        };
        self.groups.push(g.clone());
        g
    }

    /// Runs until a shutdown request or a task's unexpected end, then stops every group in
    /// order within `deadline`. `Ok` after a requested stop; the first unexpected end
    /// otherwise.
    pub async fn run(mut self, deadline: Duration) -> Result<(), TaskEnded> {
        let failure = tokio::select! {
            _ = self.shutdown.cancelled() => None,
            ended = self.ended_rx.recv() => ended,
        };
        self.stopping.cancel();
        let service = self.service;
        match &failure {
            None => tracing::info!("{service} stopping on request"),
            Some(e) => tracing::error!(error = %e, "{service} stopping after a task ended"),
        }
        self.stop_in_order(deadline).await;
        tracing::info!("{service} stopped");
        match failure {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    async fn stop_in_order(&self, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        for g in self.groups.iter().filter(|g| g.stop == Stop::Early) {
            g.token.cancel();
        }
        for (i, g) in self.groups.iter().enumerate() {
            g.token.cancel();
            g.tracker.close();
            if tokio::time::timeout_at(until, g.tracker.wait())
                .await
                .is_err()
            {
                tracing::error!(
                    service = self.service,
                    group = g.name,
                    deadline = ?deadline,
                    "the stop deadline passed: aborting what still runs"
                );
                for late in &self.groups[i..] {
                    late.token.cancel();
                    let named = late.abort_all();
                    if !named.is_empty() {
                        tracing::error!(group = late.name, tasks = ?named, "aborted");
                    }
                    late.tracker.close();
                    late.tracker.wait().await;
                }
                return;
            }
            tracing::debug!(service = self.service, group = g.name, "group stopped");
        }
    }

    /// Runs the supervisor on its own task, then `after` (closing pools and the like), and
    /// returns the handle.
    pub fn start<A, F>(self, deadline: Duration, after: A) -> Service
    where
        A: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let done = tokio::spawn(async move {
            let r = self.run(deadline).await;
            after().await;
            r.map_err(anyhow::Error::from)
        });
        Service { shutdown, done }
    }
}

/// A running service.
pub struct Service {
    shutdown: CancellationToken,
    done: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Cancelling it stops the service (in order, within its deadline).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Requests the stop and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the service ends: after a requested stop, or because a task ended.
    pub async fn wait(self) -> anyhow::Result<()> {
        match self.done.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("the supervisor itself failed: {e}")),
        }
    }
}

/// What `main` does once a service started: writes the address file (if asked), stops the
/// service in order on SIGTERM/SIGINT, and returns the exit code: 0 after a requested stop,
/// 1 after a task's unexpected end or an unwritable address file.
pub async fn run_until_signal(
    name: &'static str,
    service: Service,
    addr_file: Option<(&std::path::Path, serde_json::Value)>,
) -> std::process::ExitCode {
    if let Some((path, doc)) = addr_file
        && let Err(e) = crate::telemetry::write_addr_file(path, &doc)
    {
        tracing::error!(file = %path.display(), error = %e, "cannot write the address file");
        if let Err(e) = service.stop().await {
            tracing::warn!(error = %format!("{e:#}"), "while stopping");
        }
        return std::process::ExitCode::FAILURE;
    }
    let token = service.shutdown_token();
    tokio::spawn(async move {
        let signal = crate::telemetry::shutdown_signal().await;
        tracing::info!(signal, "shutdown requested");
        token.cancel();
    });
    match service.wait().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{name} stopped on an error");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn until_cancelled(token: CancellationToken) -> anyhow::Result<()> {
        token.cancelled().await;
        Ok(())
    }

    #[tokio::test]
    async fn a_requested_stop_ends_groups_in_order() {
        let mut sup = Supervisor::new("test");
        let order = Arc::new(Mutex::new(Vec::new()));
        let servers = sup.group("servers", Stop::Early);
        let intake = sup.group("intake", Stop::InTurn);
        let writers = sup.group("writers", Stop::InTurn);
        for (g, later) in [(&intake, writers.token()), (&writers, intake.token())] {
            let (tok, order, name, later) = (g.token(), order.clone(), g.name(), later);
            g.spawn("t", async move {
                tok.cancelled().await;
                // The intake stops before the writers are told to.
                if name == "intake" {
                    assert!(!later.is_cancelled());
                } else {
                    assert!(later.is_cancelled());
                }
                order
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push(name);
                Ok(())
            });
        }
        let tok = servers.token();
        let server_order = order.clone();
        servers.spawn("http", async move {
            tok.cancelled().await;
            server_order
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push("servers");
            Ok(())
        });
        let stop = sup.shutdown_token();
        let svc = sup.start(Duration::from_secs(5), || async {});
        stop.cancel();
        svc.wait()
            .await
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let order = order.lock().map(|o| o.clone()).unwrap_or_default();
        // Servers were cancelled first (Early) and the rest in turn.
        assert_eq!(order, vec!["servers", "intake", "writers"]);
    }

    #[tokio::test]
    async fn liveness_counts_tasks_and_turns_to_stopping_when_the_stop_begins() {
        let mut sup = Supervisor::new("test");
        let intake = sup.group("intake", Stop::InTurn);
        let servers = sup.group("servers", Stop::Early);
        let live = sup.liveness();
        intake.spawn("a", until_cancelled(intake.token()));
        intake.spawn("b", until_cancelled(intake.token()));
        servers.spawn("http", until_cancelled(servers.token()));
        let (alive, body) = live.report();
        assert!(alive);
        assert_eq!(
            body,
            serde_json::json!({"status": "alive", "tasks": {"intake": 2, "servers": 1}})
        );
        let stop = sup.shutdown_token();
        stop.cancel();
        sup.run(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (alive, body) = live.report();
        assert!(!alive);
        assert_eq!(
            body,
            serde_json::json!({"status": "stopping", "tasks": {"intake": 0, "servers": 0}})
        );
    }

    #[tokio::test]
    async fn a_task_that_returns_early_stops_the_service_with_its_name() {
        let mut sup = Supervisor::new("test");
        let intake = sup.group("intake", Stop::InTurn);
        let writers = sup.group("writers", Stop::InTurn);
        writers.spawn("trades", until_cancelled(writers.token()));
        intake.spawn("registry", async { Ok(()) });
        let r = sup.run(Duration::from_secs(5)).await;
        match r {
            Err(TaskEnded::Ended { group, task }) => {
                assert_eq!((group, task.as_str()), ("intake", "registry"));
            }
            other => panic!("expected an early end, got {other:?}"),
        }
        assert!(writers.token().is_cancelled());
        assert!(writers.is_empty());
    }

    #[tokio::test]
    async fn an_error_and_a_panic_are_failures_and_spawn_once_may_finish() {
        let mut sup = Supervisor::new("test");
        let g = sup.group("aux", Stop::InTurn);
        g.spawn_once("migrate", async { Ok(()) });
        g.spawn("pinger", async { Err(anyhow::anyhow!("database gone")) });
        match sup.run(Duration::from_secs(5)).await {
            Err(TaskEnded::Failed { task, error, .. }) => {
                assert_eq!(task, "pinger");
                assert_eq!(error.to_string(), "database gone");
            }
            other => panic!("expected a failure, got {other:?}"),
        }

        let mut sup = Supervisor::new("test");
        let g = sup.group("aux", Stop::InTurn);
        g.spawn("boom", async {
            if std::hint::black_box(true) {
                panic!("it broke");
            }
            Ok(())
        });
        match sup.run(Duration::from_secs(5)).await {
            Err(TaskEnded::Panicked { task, message, .. }) => {
                assert_eq!((task.as_str(), message.as_str()), ("boom", "it broke"));
            }
            other => panic!("expected a panic, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_covers_the_whole_stop_and_aborts_what_is_left() {
        let mut sup = Supervisor::new("test");
        let first = sup.group("intake", Stop::InTurn);
        let second = sup.group("writers", Stop::InTurn);
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Count(Arc<AtomicUsize>);
        impl Drop for Count {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        // Ignores its token for 3 s, then stops.
        let c = Count(dropped.clone());
        first.spawn("slow", async move {
            let _c = c;
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(())
        });
        // Never stops: must be aborted when the 5 s (not 3 + 5 s) run out.
        let c = Count(dropped.clone());
        second.spawn("stuck", async move {
            let _c = c;
            std::future::pending::<()>().await;
            Ok(())
        });
        let stop = sup.shutdown_token();
        let started = tokio::time::Instant::now();
        stop.cancel();
        sup.run(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(started.elapsed().as_secs(), 5);
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
        assert!(second.is_empty());
    }
}
