//! Operator commands that live outside `main.rs` (the rest move here with the shape pass).

pub mod export;
pub mod progress;
