//! Reading rsync's own output: `--info=progress2` lines for live progress, `--stats` for
//! what actually crossed the wire, and error lines to show the user when it fails.

use serde::Serialize;

/// One `--info=progress2` line: `  1,234,567  45%   10.50MB/s    0:00:12 (xfr#3, to-chk=7/10)`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Progress {
    pub bytes: u64,
    pub percent: u8,
    /// Bytes per second as rsync reports it.
    pub rate: f64,
    pub files_transferred: u64,
    /// Seconds since this attempt's client pod started copying (set by the caller).
    pub elapsed_seconds: u64,
    /// rsync's own estimate of the time left; `None` once it reports 100%.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
}

/// A progress redraw by its shape (bytes, then a percentage), without parsing it.
pub fn is_progress(line: &str) -> bool {
    let mut parts = line.split_whitespace();
    parts.next().is_some_and(|b| b.bytes().all(|c| c.is_ascii_digit() || c == b','))
        && parts.next().is_some_and(|p| p.strip_suffix('%').is_some_and(|n| n.bytes().all(|c| c.is_ascii_digit())))
}

pub fn parse_progress(line: &str) -> Option<Progress> {
    let mut parts = line.split_whitespace();
    let bytes = parts.next()?.replace(',', "").parse().ok()?;
    let percent = parts.next()?.strip_suffix('%')?.parse().ok()?;
    let rate = parse_rate(parts.next()?)?;
    // While copying, the time column is the estimate of what is left; on the last line it is
    // the time taken.
    let time = parse_clock(parts.next()?)?;
    let files_transferred = line
        .split_once("xfr#")
        .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some(Progress {
        bytes,
        percent,
        rate,
        files_transferred,
        elapsed_seconds: 0,
        eta_seconds: (percent < 100).then_some(time),
    })
}

/// `H:MM:SS` (hours may exceed 24) into seconds.
fn parse_clock(s: &str) -> Option<u64> {
    s.split(':').try_fold(0u64, |acc, part| Some(acc * 60 + part.parse::<u64>().ok()?))
}

fn parse_rate(s: &str) -> Option<f64> {
    let s = s.strip_suffix("/s")?;
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.replace(',', "").parse().ok()?;
    let mult = match unit {
        "B" | "" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * mult)
}

/// The `--stats` summary at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Stats {
    pub files: u64,
    pub files_transferred: u64,
    pub total_size: u64,
    /// File data that had to be sent (the rest matched on the destination).
    pub literal_data: u64,
    /// Bytes that crossed the wire, protocol included.
    pub bytes_sent: u64,
}

pub fn parse_stats(output: &str) -> Stats {
    let num = |line: &str| -> u64 {
        line.split_once(':')
            .map(|(_, r)| r.split_whitespace().next().unwrap_or("0").replace(',', ""))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut s = Stats::default();
    for line in output.lines() {
        let line = line.trim();
        // Summed: a PVC split into several streams prints one summary per stream.
        if line.starts_with("Number of files:") {
            s.files += num(line);
        } else if line.starts_with("Number of regular files transferred:") {
            s.files_transferred += num(line);
        } else if line.starts_with("Total file size:") {
            s.total_size += num(line);
        } else if line.starts_with("Literal data:") {
            s.literal_data += num(line);
        } else if line.starts_with("Total bytes sent:") {
            s.bytes_sent += num(line);
        }
    }
    s
}

/// Lines worth showing when rsync fails: its own error reports.
pub fn error_lines(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| {
            l.starts_with("rsync:")
                || l.starts_with("rsync error")
                || l.starts_with("@ERROR")
                || l.contains("mtcd-transfer:")
                || l.starts_with("stunnel")
        })
        .map(|l| l.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress2_lines_parse() {
        let p = parse_progress("    1,234,567  45%   10.50MB/s    0:00:12 (xfr#3, to-chk=7/10)").unwrap();
        assert_eq!(
            p,
            Progress {
                bytes: 1_234_567,
                percent: 45,
                rate: 10_500_000.0,
                files_transferred: 3,
                elapsed_seconds: 0,
                eta_seconds: Some(12)
            }
        );
        let p = parse_progress("             0   0%    0.00kB/s    0:00:00").unwrap();
        assert_eq!(p.bytes, 0);
        let p = parse_progress("  2,147,483,648  37%  120.00MB/s   26:01:05  (xfr#1, ir-chk=1000/1004)").unwrap();
        assert_eq!(p.eta_seconds, Some(26 * 3600 + 60 + 5), "hours past a day");
        let done = parse_progress("  2,147,483,648 100%  150.00MB/s    0:00:14 (xfr#4, to-chk=0/5)").unwrap();
        assert_eq!(done.eta_seconds, None, "at 100% the column is the time taken, not an estimate");
        assert!(parse_progress("sending incremental file list").is_none());
        assert!(is_progress("    1,234,567  45%   10.50MB/s    0:00:12 (xfr#3, to-chk=7/10)"));
        assert!(!is_progress("Number of files: 100,101 (reg: 100,000, dir: 101)"));
        assert!(!is_progress("rsync: [sender] write error: Broken pipe (32)"));
    }

    #[test]
    fn stats_parse() {
        let out = "Number of files: 10,003 (reg: 10,000, dir: 3)\nNumber of regular files transferred: 100\nTotal file size: 40,960,000 bytes\nLiteral data: 409,600 bytes\nTotal bytes sent: 512,345\n";
        assert_eq!(
            parse_stats(out),
            Stats {
                files: 10003,
                files_transferred: 100,
                total_size: 40_960_000,
                literal_data: 409_600,
                bytes_sent: 512_345
            }
        );
    }

    #[test]
    fn error_lines_are_rsyncs_own() {
        let out = "sending incremental file list\nrsync: [sender] send_files failed to open \"/mnt/x\": Permission denied (13)\nrsync error: some files/attrs were not transferred (code 23)\n";
        assert_eq!(error_lines(out).len(), 2);
    }
}
