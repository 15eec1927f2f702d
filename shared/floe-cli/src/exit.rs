//! Exit codes scripts can act on (listed in `floe --help`).

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// Failed; the same command fails the same way again.
pub const FAILED: u8 = 1;
/// The pipeline file or a setting is invalid.
pub const INVALID: u8 = 3;
/// Failed for a reason a retry can fix (sysexits' EX_TEMPFAIL).
pub const RETRY: u8 = 75;

/// The exit code of a command's error: invalid input, retryable, or failed.
pub fn code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<floe_backends::Error>() {
            return match e {
                floe_backends::Error::Settings { .. } => INVALID,
                floe_backends::Error::Core(core) => core_code(core),
            };
        }
        if let Some(e) = cause.downcast_ref::<floe_core::Error>() {
            return core_code(e);
        }
    }
    FAILED
}

fn core_code(e: &floe_core::Error) -> u8 {
    match e {
        floe_core::Error::Config { .. } | floe_core::Error::Schema { .. } | floe_core::Error::Backfill(_) => INVALID,
        e if e.is_retryable() => RETRY,
        _ => FAILED,
    }
}

/// Print the error with its causes and turn it into the process exit code.
pub fn report(error: anyhow::Error) -> ExitCode {
    eprintln!("floe: {error:#}");
    ExitCode::from(code(&error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_codes() {
        let config = floe_core::Error::Config { file: "p.toml".into(), message: "line 1".into() };
        assert_eq!(code(&anyhow::Error::new(config).context("loading")), INVALID);
        let setting = floe_backends::Error::Settings { var: "FLOE_BACKEND".into(), message: "unknown".into() };
        assert_eq!(code(&anyhow::Error::new(setting)), INVALID);
        let throttled = floe_backends::Error::Core(floe_core::Error::state("throttled", true));
        assert_eq!(code(&anyhow::Error::new(throttled)), RETRY);
        assert_eq!(code(&anyhow::Error::new(floe_core::Error::state("corrupt", false))), FAILED);
        assert_eq!(code(&anyhow::anyhow!("reading events/1.json")), FAILED);
    }
}
