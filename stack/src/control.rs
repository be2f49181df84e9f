//! The commands a running stack accepts on its control port (`kill`, `start`, `term`,
//! `failover`, `fault`, `partition`, `production`, `rate`), as one typed message shared by the
//! CLI that sends it and the stack that carries it out.
//!
//! It owns the wire shape of those commands. It must never accept a command it cannot name
//! exactly: an unknown target or state is refused with the list of valid ones, never read as
//! "the other" value.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Stack;

/// A service of the stack that can be killed, started or terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Gatherer,
    Deduplicator,
}

/// A network partition between the deduplicator and a gatherer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Partition {
    /// Stall the connection (a partition).
    On,
    /// Restore it.
    Off,
}

/// Production's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Power {
    Up,
    Down,
}

/// One command for a running stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// SIGKILL.
    Kill {
        target: Target,
        n: Option<usize>,
    },
    /// Start a stopped service (a gatherer: and wait until it is healthy).
    Start {
        target: Target,
        n: Option<usize>,
    },
    /// SIGTERM, and wait for the exit.
    Term {
        target: Target,
        n: Option<usize>,
    },
    Failover,
    /// A simulator fault, as the simulator's control API takes it.
    Fault {
        fault: Value,
    },
    Partition {
        n: usize,
        state: Partition,
    },
    Production {
        state: Power,
    },
    Rate {
        rate: u64,
    },
}

/// The gatherer number a command needs.
fn gatherer(n: Option<usize>) -> anyhow::Result<usize> {
    n.ok_or_else(|| anyhow::anyhow!("which gatherer? e.g. `kill gatherer 2`"))
}

impl Action {
    /// Carries the command out; returns what happened, for the operator.
    pub async fn apply(self, stack: &mut Stack) -> anyhow::Result<String> {
        use Target::{Deduplicator, Gatherer};
        match self {
            Action::Kill {
                target: Gatherer,
                n,
            } => {
                let n = gatherer(n)?;
                stack
                    .kill_gatherer(n)
                    .map(|_| format!("gatherer {n} killed"))
            }
            Action::Start {
                target: Gatherer,
                n,
            } => {
                let n = gatherer(n)?;
                stack
                    .start_gatherer(n)
                    .await
                    .map(|_| format!("gatherer {n} started and healthy"))
            }
            Action::Term {
                target: Gatherer,
                n,
            } => {
                let n = gatherer(n)?;
                stack
                    .terminate_gatherer(n)
                    .map(|c| format!("gatherer {n} exited with {c:?}"))
            }
            Action::Kill {
                target: Deduplicator,
                ..
            } => {
                let name = stack.kill_deduplicator().await;
                Ok(format!("{name} killed"))
            }
            Action::Start {
                target: Deduplicator,
                ..
            } => stack
                .start_deduplicator()
                .map(|_| "deduplicator started".into()),
            Action::Term {
                target: Deduplicator,
                ..
            } => Ok(format!(
                "deduplicator exited with {:?}",
                stack.terminate_deduplicator().await
            )),
            Action::Failover => stack
                .failover()
                .map(|_| "primary killed, standby promoted, endpoint moved".into()),
            Action::Fault { fault } => stack.fault(fault).await.map(|v| v.to_string()),
            Action::Partition { n, state } => {
                let cut = state == Partition::On;
                stack.partition_gatherer(n, cut).map(|_| {
                    format!(
                        "gatherer {n} {}",
                        if cut { "partitioned" } else { "reconnected" }
                    )
                })
            }
            Action::Production { state } => {
                let up = state == Power::Up;
                stack
                    .production(up)
                    .map(|_| format!("production {}", if up { "up" } else { "down" }))
            }
            Action::Rate { rate } => stack.set_rate(rate).await.map(|_| "rate set".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn the_wire_shape_is_the_one_the_runbooks_use() {
        let a: Action =
            serde_json::from_value(json!({"action": "kill", "target": "gatherer", "n": 2}))
                .unwrap();
        assert_eq!(
            a,
            Action::Kill {
                target: Target::Gatherer,
                n: Some(2)
            }
        );
        let a: Action =
            serde_json::from_value(json!({"action": "production", "state": "down"})).unwrap();
        assert_eq!(a, Action::Production { state: Power::Down });
        assert_eq!(
            serde_json::to_value(Action::Partition {
                n: 1,
                state: Partition::On
            })
            .unwrap(),
            json!({"action": "partition", "n": 1, "state": "on"})
        );
    }

    #[test]
    fn an_unknown_state_or_target_is_refused_not_read_as_the_other_one() {
        for bad in [
            json!({"action": "production", "state": "upp"}),
            json!({"action": "production", "state": "UP"}),
            json!({"action": "partition", "n": 1, "state": "yes"}),
            json!({"action": "kill", "target": "gatherers", "n": 1}),
            json!({"action": "reboot"}),
            json!({"action": "rate", "rate": 5, "extra": true}),
        ] {
            let e = serde_json::from_value::<Action>(bad.clone()).unwrap_err();
            assert!(e.to_string().contains("unknown"), "{bad}: {e}");
        }
    }
}
