//! Judging a client pod's run: success needs positive evidence (exit code 0, or 24 where
//! vanished files are allowed, *and* the script's `done` line with rsync's statistics);
//! failures are named, and those a retry cannot fix (a full volume, permissions,
//! authentication, a missing module) end the PVC's transfer at the first attempt.

use super::objects::exit;
use super::progress::{self, Stats};

/// rsync's exit codes, by name (rsync(1), EXIT VALUES).
pub fn exit_name(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files, dirs",
        4 => "requested action not supported",
        5 => "error starting client-server protocol",
        6 => "daemon unable to append to log-file",
        10 => "error in socket I/O",
        11 => "error in file I/O",
        12 => "error in rsync protocol data stream",
        13 => "errors with program diagnostics",
        14 => "error in IPC code",
        20 => "received SIGUSR1 or SIGINT",
        21 => "some error returned by waitpid()",
        22 => "error allocating core memory buffers",
        23 => "partial transfer due to error",
        24 => "partial transfer due to vanished source files",
        25 => "the --max-delete limit stopped deletions",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for daemon connection",
        exit::TUNNEL => "the TLS tunnel to the destination did not come up",
        exit::RESTORE => "restoring symlinks on the destination failed",
        exit::VERIFY => "verification found differences after the copy",
        exit::MEASURE => "measuring the source volume failed",
        exit::NO_ROOM => "the source's data does not fit the destination PVC",
        137 => "the pod was killed (SIGKILL, e.g. out of memory or deleted)",
        143 => "the pod was terminated (SIGTERM)",
        _ => "unknown error",
    }
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A retry cannot fix it: the PVC's transfer ends now.
    pub fatal: bool,
    /// What happened and what to do, with rsync's own error lines.
    pub message: String,
}

/// A successful attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    pub stats: Stats,
    /// Something the user should know although the copy counts as done (files vanished
    /// during a stage sync).
    pub warning: Option<String>,
}

/// Failures a retry cannot fix, recognised in rsync's error lines: (text, what it means).
const FATAL: &[(&str, &str)] = &[
    (
        "No space left on device",
        "the destination volume is full: make the destination PVC larger (or set dvm.grow = true) and run again",
    ),
    ("Disk quota exceeded", "a quota on the destination volume was exceeded: raise it and run again"),
    (
        "Permission denied",
        "permission denied: the transfer pods' user cannot read the source or write the destination (see dvm.run_as_user and docs/dvm.md)",
    ),
    (
        "Operation not permitted",
        "operation not permitted: the transfer pods lack a privilege the data needs (owners, devices, set-id bits; see docs/dvm.md, non-root mode)",
    ),
    ("Read-only file system", "the destination volume is mounted read-only"),
    (
        "auth failed on module",
        "the rsync daemon refused the transfer's password (authentication failed); run again to get fresh credentials",
    ),
    ("Unknown module", "the rsync daemon has no module for this PVC; run again to re-create the transfer server"),
];

/// Judges one finished client pod from its exit code and log. `final_sync`: the cutover's
/// last copy, where a file that vanished means the source was still being written.
pub fn judge(code: i32, log: &str, final_sync: bool, pod: &str) -> Result<Success, Failure> {
    let mut lines = progress::error_lines(log);
    const PLAIN: &[&str] = &["rsync exit", "note:", "tunnel up", "verifying", "done"];
    lines.retain(|l| !PLAIN.iter().any(|p| l.strip_prefix("mtcd-transfer: ").is_some_and(|r| r.starts_with(p))));
    lines.dedup();
    lines.truncate(10);
    let detail = if lines.is_empty() { String::new() } else { format!(": {}", lines.join(" | ")) };
    let fatal_reason = FATAL.iter().find(|(needle, _)| log.contains(needle)).map(|(_, why)| *why);
    match code {
        0 | 24 => {
            let done = log.lines().any(|l| l.trim_start().starts_with("mtcd-transfer: done "));
            let stats = progress::parse_stats(log);
            let has_stats = log.lines().any(|l| l.trim_start().starts_with("Total bytes sent:"));
            if !done || !has_stats {
                return Err(Failure {
                    fatal: false,
                    message: format!(
                        "pod {pod} exited {code} but its log has no {} — not counted as done{detail}",
                        if done { "rsync statistics" } else { "end-of-transfer line" }
                    ),
                });
            }
            if code == 0 {
                return Ok(Success { stats, warning: None });
            }
            let what = "rsync exit 24, partial transfer due to vanished source files: files were deleted on the source while it was read";
            if final_sync {
                Err(Failure {
                    fatal: true,
                    message: format!(
                        "pod {pod}: {what}, during the final sync — the application still writes; stop it (mtcd cutover quiesces it) and run again{detail}"
                    ),
                })
            } else {
                Ok(Success {
                    stats,
                    warning: Some(format!(
                        "{what} (a stage sync while the application runs; the final sync at cutover copies them)"
                    )),
                })
            }
        }
        exit::TUNNEL => Err(Failure {
            fatal: false,
            message: format!(
                "pod {pod}: {} (is the destination's endpoint reachable from the source?){detail}",
                exit_name(code)
            ),
        }),
        exit::VERIFY => Err(Failure { fatal: false, message: format!("pod {pod}: {}{detail}", exit_name(code)) }),
        exit::RESTORE | exit::MEASURE | exit::NO_ROOM => {
            Err(Failure { fatal: true, message: format!("pod {pod}: {}{detail}", exit_name(code)) })
        }
        c => match fatal_reason {
            Some(why) => Err(Failure {
                fatal: true,
                message: format!("pod {pod}: rsync exit {c} ({}): {why}{detail}", exit_name(c)),
            }),
            // Files or attributes rsync could not copy: a retry copies the same tree the same way.
            None if c == 23 => Err(Failure {
                fatal: true,
                message: format!(
                    "pod {pod}: rsync exit 23 ({}): some files or attributes were not copied{detail}",
                    exit_name(c)
                ),
            }),
            None => {
                Err(Failure { fatal: false, message: format!("pod {pod}: rsync exit {c} ({}){detail}", exit_name(c)) })
            }
        },
    }
}

/// Attempt messages for people: a message repeated by consecutive attempts is kept once
/// with its count (`attempts 2–4 of 4 (3×): …`).
#[derive(Debug, Default, Clone)]
pub struct Attempts {
    runs: Vec<(u32, u32, String)>,
}

impl Attempts {
    /// Records attempt `n`'s message; whether it repeats the previous one.
    pub fn record(&mut self, n: u32, message: String) -> bool {
        if let Some(last) = self.runs.last_mut()
            && last.2 == message
            && last.1 + 1 == n
        {
            last.1 = n;
            return true;
        }
        self.runs.push((n, n, message));
        false
    }

    /// One line per distinct run of messages.
    pub fn lines(&self, of: u32) -> Vec<String> {
        self.runs
            .iter()
            .map(|(a, b, m)| {
                if a == b {
                    format!("attempt {a}/{of}: {m}")
                } else {
                    format!("attempts {a}–{b} of {of} ({}×): {m}", b - a + 1)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "Number of files: 3\nTotal file size: 10 bytes\nTotal bytes sent: 100\nmtcd-transfer: done 0\n";

    #[test]
    fn done_needs_exit_zero_and_statistics() {
        let ok = judge(0, STATS, false, "ns/p").unwrap();
        assert_eq!(ok.stats.files, 3);
        assert_eq!(ok.warning, None);
        let e = judge(0, "mtcd-transfer: tunnel up\n", false, "ns/p").unwrap_err();
        assert!(e.message.contains("not counted as done"), "{}", e.message);
        let e = judge(0, "Total bytes sent: 1\n", false, "ns/p").unwrap_err();
        assert!(e.message.contains("end-of-transfer line"), "{}", e.message);
    }

    #[test]
    fn vanished_files_warn_during_stage_and_fail_the_final_sync() {
        let log = format!("rsync warning: some files vanished before they could be transferred (code 24)\n{STATS}");
        let w = judge(24, &log, false, "ns/p").unwrap();
        assert!(w.warning.unwrap().contains("vanished source files"));
        let e = judge(24, &log, true, "ns/p").unwrap_err();
        assert!(e.fatal && e.message.contains("during the final sync"), "{}", e.message);
    }

    #[test]
    fn what_a_retry_cannot_fix_is_fatal_and_named() {
        let enospc = "rsync: [receiver] write failed on \"/big.bin\" (in data): No space left on device (28)\nrsync error: error in file IO (code 11) at receiver.c(381) [receiver=3.5.0]\n";
        let e = judge(11, enospc, false, "shop/mtcd-transfer-data").unwrap_err();
        assert!(e.fatal);
        assert!(
            e.message.contains("rsync exit 11 (error in file I/O): the destination volume is full"),
            "{}",
            e.message
        );
        assert!(e.message.contains("No space left on device (28)"), "rsync's own line: {}", e.message);
        let auth = "@ERROR: auth failed on module data\nrsync error: error starting client-server protocol (code 5)\n";
        assert!(judge(5, auth, false, "p").unwrap_err().message.contains("authentication failed"));
        let module = "@ERROR: Unknown module 'data'\nrsync error: error starting client-server protocol (code 5)\n";
        assert!(judge(5, module, false, "p").unwrap_err().fatal);
        let partial = "rsync: [generator] failed to set times on \"/x\": Invalid argument (22)\nrsync error: some files/attrs were not transferred (see previous errors) (code 23)\n";
        let e = judge(23, partial, false, "p").unwrap_err();
        assert!(e.fatal && e.message.contains("rsync exit 23 (partial transfer due to error)"), "{}", e.message);
    }

    #[test]
    fn transport_failures_are_retried() {
        let io = "rsync: connection unexpectedly closed (0 bytes received so far) [sender]\nrsync error: error in rsync protocol data stream (code 12)\n";
        let e = judge(12, io, false, "p").unwrap_err();
        assert!(!e.fatal);
        assert!(e.message.contains("rsync exit 12 (error in rsync protocol data stream)"));
        assert!(!judge(exit::TUNNEL, "mtcd-transfer: tunnel not up after 5s\n", false, "p").unwrap_err().fatal);
        assert!(!judge(137, "", false, "p").unwrap_err().fatal);
    }

    #[test]
    fn repeated_attempt_messages_are_kept_once_with_a_count() {
        let mut a = Attempts::default();
        assert!(!a.record(1, "tunnel".into()));
        assert!(!a.record(2, "boom".into()));
        assert!(a.record(3, "boom".into()));
        assert!(a.record(4, "boom".into()));
        assert_eq!(a.lines(4), vec!["attempt 1/4: tunnel".to_string(), "attempts 2–4 of 4 (3×): boom".to_string()]);
    }
}
