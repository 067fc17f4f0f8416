//! Standard five-field cron schedules, as a Kubernetes CronJob reads them (robfig/cron's
//! standard parser): `minute hour day-of-month month day-of-week`, each `*`, a number, a
//! range `a-b`, a list `a,b`, a step `*/n` or `a-b/n`; month and weekday names (`JAN`,
//! `MON`); `7` is Sunday too; the macros `@yearly`, `@annually`, `@monthly`, `@weekly`,
//! `@daily`, `@midnight`, `@hourly`. When both day fields are restricted a day matches
//! either (cron's rule). Times are UTC, as the CronJob controller's default.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

/// A schedule that cannot be read, with the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron schedule {schedule:?}: {reason}")]
pub struct CronError {
    pub schedule: String,
    pub reason: String,
}

/// A parsed schedule: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_star: bool,
    weekdays_star: bool,
}

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn field(text: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + min);
        }
        let v: u32 = s.parse().map_err(|_| format!("{what}: {s:?} is not a number"))?;
        // Sunday may be written 7.
        let v = if what == "day of week" && v == 7 { 0 } else { v };
        if v < min || v > max {
            return Err(format!("{what}: {v} is outside {min}-{max}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    let star = text == "*" || text == "?";
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("{what}: step {s:?} is not a number"))?;
                if step == 0 {
                    return Err(format!("{what}: a step must be at least 1"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, if what == "day of week" { 6 } else { max })
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `5/15` means 5, 20, 35, 50: from the value to the end.
            (v, if step > 1 { max } else { v })
        };
        if lo > hi {
            return Err(format!("{what}: range {range:?} ends before it starts"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    if bits == 0 {
        return Err(format!("{what}: {text:?} selects nothing"));
    }
    Ok((bits, star))
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let fail = |reason: String| CronError { schedule: text.to_string(), reason };
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => return Err(fail(format!("unknown macro {other:?}"))),
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(fail(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        }
        let (minutes, _) = field(fields[0], "minute", 0, 59, &[]).map_err(fail)?;
        let (hours, _) = field(fields[1], "hour", 0, 23, &[]).map_err(fail)?;
        let (days, days_star) = field(fields[2], "day of month", 1, 31, &[]).map_err(fail)?;
        let (months, _) = field(fields[3], "month", 1, 12, &MONTHS).map_err(fail)?;
        let (weekdays, weekdays_star) = field(fields[4], "day of week", 0, 7, &DAYS).map_err(fail)?;
        Ok(Schedule { text: text.to_string(), minutes, hours, days, months, weekdays, days_star, weekdays_star })
    }

    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, t: &DateTime<Utc>) -> bool {
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().num_days_from_sunday()) != 0;
        match (self.days_star, self.weekdays_star) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first scheduled minute strictly after `after` (none within five years: a
    /// schedule such as `0 0 30 2 *`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let end = after + Duration::days(366 * 5);
        while t <= end {
            if self.months & (1 << t.month()) == 0 || !self.day_matches(&t) {
                t = (t + Duration::days(1)).with_hour(0)?.with_minute(0)?;
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = (t + Duration::hours(1)).with_minute(0)?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t += Duration::minutes(1);
                continue;
            }
            return Some(t);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn next_times_follow_cron_rules() {
        let every15 = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(every15.next_after(at("2024-05-01T10:07:30Z")), Some(at("2024-05-01T10:15:00Z")));
        assert_eq!(every15.next_after(at("2024-05-01T10:45:00Z")), Some(at("2024-05-01T11:00:00Z")));
        let nightly = Schedule::parse("30 2 * * MON-FRI").unwrap();
        // 2024-05-04 is a Saturday.
        assert_eq!(nightly.next_after(at("2024-05-04T03:00:00Z")), Some(at("2024-05-06T02:30:00Z")));
        let either = Schedule::parse("0 0 1 * 0").unwrap();
        // The 1st, or any Sunday: 2024-05-05 is a Sunday.
        assert_eq!(either.next_after(at("2024-05-02T00:00:00Z")), Some(at("2024-05-05T00:00:00Z")));
        assert_eq!(
            Schedule::parse("@hourly").unwrap().next_after(at("2024-05-01T10:00:00Z")),
            Some(at("2024-05-01T11:00:00Z"))
        );
        assert_eq!(Schedule::parse("0 0 30 2 *").unwrap().next_after(at("2024-05-01T10:00:00Z")), None);
        assert_eq!(
            Schedule::parse("5/20 * * * 7").unwrap().next_after(at("2024-05-05T00:06:00Z")),
            Some(at("2024-05-05T00:25:00Z"))
        );
    }

    #[test]
    fn invalid_schedules_name_the_field() {
        let e = Schedule::parse("*/15 * * *").unwrap_err();
        assert!(e.reason.contains("expected 5 fields"), "{e}");
        let e = Schedule::parse("61 * * * *").unwrap_err();
        assert_eq!(e.reason, "minute: 61 is outside 0-59");
        let e = Schedule::parse("* * * FOO *").unwrap_err();
        assert!(e.reason.contains("month: \"FOO\""), "{e}");
        assert!(Schedule::parse("*/0 * * * *").is_err());
    }
}
