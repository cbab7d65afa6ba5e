//! Asynchronous tasks: their kinds and the states they move through
//! (`PENDING` -> `IN_PROGRESS` -> `COMPLETED` | `FAILED`).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 4] = [
        TaskStatus::Pending,
        TaskStatus::InProgress,
        TaskStatus::Completed,
        TaskStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "PENDING",
            TaskStatus::InProgress => "IN_PROGRESS",
            TaskStatus::Completed => "COMPLETED",
            TaskStatus::Failed => "FAILED",
        }
    }

    /// A terminal task never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown task status '{s}'"))
    }
}

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    Rebuild,
    /// Installs, addresses and starts a purchased service.
    Provision,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Rebuild => "REBUILD",
            TaskKind::Provision => "PROVISION",
        }
    }
}

impl FromStr for TaskKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "REBUILD" => Ok(TaskKind::Rebuild),
            "PROVISION" => Ok(TaskKind::Provision),
            other => Err(format!("unknown task kind '{other}'")),
        }
    }
}

/// Progress of a task that runs for `duration_ms` and started `elapsed_ms` ago,
/// as the API shows it: pending during the first tenth (queued), then rising
/// from 1 to 99 while in progress. Completion (100) is decided by whoever
/// finishes the task, never guessed from the clock alone.
pub fn simulated_progress(elapsed_ms: i64, duration_ms: i64) -> (TaskStatus, u8) {
    if duration_ms <= 0 {
        return (TaskStatus::InProgress, 99);
    }
    let elapsed = elapsed_ms.clamp(0, duration_ms);
    if elapsed * 10 < duration_ms {
        return (TaskStatus::Pending, 0);
    }
    let percent = (elapsed * 100 / duration_ms).clamp(1, 99) as u8;
    (TaskStatus::InProgress, percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_pending_then_rises_and_never_reaches_100() {
        assert_eq!(simulated_progress(0, 20_000), (TaskStatus::Pending, 0));
        assert_eq!(simulated_progress(1_999, 20_000), (TaskStatus::Pending, 0));
        assert_eq!(
            simulated_progress(2_000, 20_000),
            (TaskStatus::InProgress, 10)
        );
        assert_eq!(
            simulated_progress(10_000, 20_000),
            (TaskStatus::InProgress, 50)
        );
        assert_eq!(
            simulated_progress(25_000, 20_000),
            (TaskStatus::InProgress, 99)
        );
        let mut last = 0;
        for ms in (0..20_000).step_by(250) {
            let (_, p) = simulated_progress(ms, 20_000);
            assert!(p >= last);
            last = p;
        }
    }

    #[test]
    fn statuses_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>().unwrap(), status);
        }
        assert!(TaskStatus::Failed.is_terminal());
        assert!(!TaskStatus::InProgress.is_terminal());
    }
}
