//! `triggers.schedules`: 5-field cron expressions, parsed by `croner`.

use croner::parser::{CronParser, Seconds, Year};

/// What is wrong with a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronError {
    /// Not exactly 5 whitespace-separated fields; carries the number found.
    FieldCount(usize),
    /// 5 fields that do not parse; carries `croner`'s reason.
    Invalid(String),
}

/// A schedule: exactly 5 fields (minute, hour, day of month, month, day of week; day and month
/// names such as `MON` and `JAN` allowed) that `croner` parses, with no seconds or year field.
pub fn cron(s: &str) -> Result<(), CronError> {
    schedule(s).map(|_| ())
}

/// Parses a schedule by the rule of [`cron`] into the `croner` schedule the runtime's scheduler
/// iterates (its instants are minutes, in UTC when given UTC times).
pub fn schedule(s: &str) -> Result<croner::Cron, CronError> {
    let fields = s.split_whitespace().count();
    if fields != 5 {
        return Err(CronError::FieldCount(fields));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    parser
        .parse(s)
        .map_err(|e| CronError::Invalid(e.to_string()))
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
}
