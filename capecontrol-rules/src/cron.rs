//! `triggers.schedules`: 5-field cron expressions, parsed by `croner`, optionally prefixed by
//! `CRON_TZ=<IANA zone>` (as in cronie and Kubernetes CronJobs) to compute instants in that zone.

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};

/// The prefix that names a schedule's time zone: `CRON_TZ=Europe/Paris 0 9 * * *`.
pub const CRON_TZ_PREFIX: &str = "CRON_TZ=";

/// What is wrong with a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronError {
    /// Not exactly 5 whitespace-separated fields (after any `CRON_TZ=` prefix); carries the
    /// number found.
    FieldCount(usize),
    /// 5 fields that do not parse; carries `croner`'s reason.
    Invalid(String),
    /// A `CRON_TZ=` prefix naming no IANA time zone; carries the name given.
    UnknownTimeZone(String),
}

/// A schedule: exactly 5 fields (minute, hour, day of month, month, day of week; day and month
/// names such as `MON` and `JAN` allowed) that `croner` parses, with no seconds or year field,
/// optionally preceded by `CRON_TZ=<IANA zone>` (for example `CRON_TZ=Europe/Paris 0 9 * * *`).
/// Without the prefix the schedule is in UTC.
pub fn cron(s: &str) -> Result<(), CronError> {
    schedule(s).map(|_| ())
}

/// A parsed schedule: a `croner` pattern and the time zone its fields are read in.
///
/// Instants go in and come out in UTC; the pattern matches wall-clock times in the zone. On a
/// spring-forward day a time that does not exist in the zone (02:30 in Europe/Paris) fires at
/// the first real instant after the gap (03:00 local); on a fall-back day a repeated time fires
/// once, at its first occurrence.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: Option<chrono_tz::Tz>,
}

impl Schedule {
    /// The IANA name of the schedule's time zone, `None` for UTC.
    pub fn time_zone(&self) -> Option<&'static str> {
        self.tz.map(|tz| tz.name())
    }

    /// The first instant of the schedule after `t` (or at `t` when `inclusive`).
    pub fn find_next_occurrence(
        &self,
        t: &DateTime<Utc>,
        inclusive: bool,
    ) -> Result<DateTime<Utc>, croner::errors::CronError> {
        match self.tz {
            None => self.cron.find_next_occurrence(t, inclusive),
            Some(tz) => self
                .cron
                .find_next_occurrence(&t.with_timezone(&tz), inclusive)
                .map(|l| l.with_timezone(&Utc)),
        }
    }

    /// The last instant of the schedule before `t` (or at `t` when `inclusive`).
    pub fn find_previous_occurrence(
        &self,
        t: &DateTime<Utc>,
        inclusive: bool,
    ) -> Result<DateTime<Utc>, croner::errors::CronError> {
        match self.tz {
            None => self.cron.find_previous_occurrence(t, inclusive),
            Some(tz) => self
                .cron
                .find_previous_occurrence(&t.with_timezone(&tz), inclusive)
                .map(|l| l.with_timezone(&Utc)),
        }
    }
}

/// Parses a schedule by the rule of [`cron`] into the [`Schedule`] the runtime's scheduler
/// iterates (its instants are minutes, in UTC).
pub fn schedule(s: &str) -> Result<Schedule, CronError> {
    let trimmed = s.trim_start();
    let (tz, pattern) = match trimmed.strip_prefix(CRON_TZ_PREFIX) {
        Some(rest) => {
            let (name, pattern) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let tz = name
                .parse::<chrono_tz::Tz>()
                .map_err(|_| CronError::UnknownTimeZone(name.to_owned()))?;
            (Some(tz), pattern)
        }
        None => (None, trimmed),
    };
    let fields = pattern.split_whitespace().count();
    if fields != 5 {
        return Err(CronError::FieldCount(fields));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    let cron = parser
        .parse(pattern)
        .map_err(|e| CronError::Invalid(e.to_string()))?;
    Ok(Schedule { cron, tz })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions() {
        for ok in [
            "0 9 * * MON",
            "0 */6 * * *",
            "*/15 0-6 1,15 JAN-JUN mon-fri",
            "30 23 L * *",
            "0 0 1 dec sun",
            "  0 9 * * 1  ",
        ] {
            assert_eq!(cron(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "* * * *",
            "0 0 9 * * MON",
            "0 0 9 * * MON 2030",
            "@daily",
            "60 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "* * * 13 *",
            "* * * * FOO",
            "a b c d e",
        ] {
            assert!(cron(bad).is_err(), "{bad}");
        }
        assert_eq!(cron("0 0 9 * * MON"), Err(CronError::FieldCount(6)));
    }

    #[test]
    fn time_zone_prefix() {
        assert_eq!(cron("CRON_TZ=Europe/Paris 0 9 * * *"), Ok(()));
        assert_eq!(cron("  CRON_TZ=UTC   */5 * * * *"), Ok(()));
        assert_eq!(
            cron("CRON_TZ=Europe/Pariss 0 9 * * *"),
            Err(CronError::UnknownTimeZone("Europe/Pariss".into()))
        );
        assert_eq!(
            cron("CRON_TZ= 0 9 * * *"),
            Err(CronError::UnknownTimeZone(String::new()))
        );
        assert_eq!(cron("CRON_TZ=Europe/Paris"), Err(CronError::FieldCount(0)));
        assert_eq!(
            cron("CRON_TZ=Europe/Paris 0 0 9 * * *"),
            Err(CronError::FieldCount(6))
        );
        assert_eq!(schedule("0 9 * * *").unwrap().time_zone(), None);
        assert_eq!(
            schedule("CRON_TZ=America/New_York 0 9 * * *")
                .unwrap()
                .time_zone(),
            Some("America/New_York")
        );
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn instants_follow_the_zone_across_dst() {
        // Europe/Paris springs forward on 2026-03-29 (02:00 CET -> 03:00 CEST) and falls back
        // on 2026-10-25 (03:00 CEST -> 02:00 CET).
        let s = schedule("CRON_TZ=Europe/Paris 30 2 * * *").unwrap();
        let mut t = utc("2026-03-27T12:00:00Z");
        let mut got = Vec::new();
        for _ in 0..4 {
            t = s.find_next_occurrence(&t, false).unwrap();
            got.push(t.to_rfc3339());
        }
        assert_eq!(
            got,
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // 02:30 does not exist: 03:00 CEST
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
                "2026-03-31T00:30:00+00:00",
            ]
        );
        assert_eq!(
            s.find_previous_occurrence(&utc("2026-03-30T00:00:00Z"), false)
                .unwrap(),
            utc("2026-03-29T01:00:00Z")
        );
        // 02:30 happens twice on the fall-back day: the schedule fires once.
        let mut t = utc("2026-10-24T12:00:00Z");
        let mut got = Vec::new();
        for _ in 0..3 {
            t = s.find_next_occurrence(&t, false).unwrap();
            got.push(t.to_rfc3339());
        }
        assert_eq!(
            got,
            [
                "2026-10-25T00:30:00+00:00", // 02:30 CEST, the first of the two
                "2026-10-26T01:30:00+00:00", // 02:30 CET
                "2026-10-27T01:30:00+00:00",
            ]
        );
        // Without a prefix: UTC.
        let u = schedule("30 2 * * *").unwrap();
        assert_eq!(
            u.find_next_occurrence(&utc("2026-03-28T12:00:00Z"), false)
                .unwrap(),
            utc("2026-03-29T02:30:00Z")
        );
    }
}
