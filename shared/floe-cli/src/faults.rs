//! The fault options of the `floe-faults` test binary (feature `failpoints`): crash at a named step, fail a
//! state-store call as throttled, or pause once at a step to open a race window.

use std::path::PathBuf;

use floe_core::failpoint;
use floe_core::testing::{self, Pause};

#[derive(clap::Args, Clone, Default)]
pub struct FaultArgs {
    /// Simulate a crash at this step, or fail this state-store call as throttled (`state.<method>`).
    #[arg(long, value_parser = parse_point)]
    pub fail_at: Option<String>,
    /// With `--fail-at`: fail this many times, then let the step pass (a transient failure).
    #[arg(long, requires = "fail_at")]
    pub fail_times: Option<u32>,
    /// Pause once at a step: `<point>=<milliseconds>` or `<point>=@<file>` (until the file exists).
    #[arg(long, value_parser = parse_pause)]
    pub pause_at: Option<(String, Pause)>,
}

impl FaultArgs {
    /// Arm what the options ask for, in this process.
    pub fn arm(&self) {
        match (&self.fail_at, self.fail_times) {
            (Some(point), Some(times)) => testing::arm_times(point, times),
            (Some(point), None) => testing::arm(point),
            _ => {}
        }
        if let Some((point, pause)) = &self.pause_at {
            testing::arm_pause(point, pause.clone());
        }
    }
}

fn parse_point(text: &str) -> Result<String, String> {
    if failpoint::ALL.contains(&text) || failpoint::STATE_CALLS.contains(&text) {
        Ok(text.to_string())
    } else {
        Err(format!("unknown point `{text}`; one of {:?} or {:?}", failpoint::ALL, failpoint::STATE_CALLS))
    }
}

fn parse_pause(text: &str) -> Result<(String, Pause), String> {
    let (point, how) = text.split_once('=').ok_or("expected <point>=<milliseconds> or <point>=@<file>")?;
    if !failpoint::ALL.contains(&point) {
        return Err(format!("unknown point `{point}`; one of {:?}", failpoint::ALL));
    }
    let pause = match how.strip_prefix('@') {
        Some(file) => Pause::UntilFile(PathBuf::from(file)),
        None => {
            let millis = how.parse().map_err(|_| format!("`{how}` is not a number of milliseconds"))?;
            Pause::For(std::time::Duration::from_millis(millis))
        }
    };
    Ok((point.to_string(), pause))
}
