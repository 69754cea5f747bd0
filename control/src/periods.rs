//! Limit periods and their calendar windows, in UTC, as apisonator aligns them: a week starts on
//! Monday 00:00, a month on the 1st, a year on January 1st; `eternity` never ends.
//!
//! Time is plain UNIX seconds (`i64`) so that tests can pick any instant.

use std::fmt;

/// A period a limit (and a counter) applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
    Eternity,
}

impl Period {
    /// Shortest first.
    pub const ALL: [Period; 7] = [
        Period::Minute,
        Period::Hour,
        Period::Day,
        Period::Week,
        Period::Month,
        Period::Year,
        Period::Eternity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Year => "year",
            Period::Eternity => "eternity",
        }
    }

    pub fn parse(name: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The window containing `now`: `(start, end)` in UNIX seconds, `end` exclusive and `None`
    /// for eternity (whose start is 0).
    pub fn window(self, now: i64) -> (i64, Option<i64>) {
        let day = now.div_euclid(86_400);
        match self {
            Period::Minute => {
                let s = now.div_euclid(60) * 60;
                (s, Some(s + 60))
            }
            Period::Hour => {
                let s = now.div_euclid(3600) * 3600;
                (s, Some(s + 3600))
            }
            Period::Day => (day * 86_400, Some((day + 1) * 86_400)),
            Period::Week => {
                // 1970-01-01 was a Thursday: Monday is 3 days before.
                let monday = day - (day + 3).rem_euclid(7);
                (monday * 86_400, Some((monday + 7) * 86_400))
            }
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                let start = days_from_civil(y, m, 1);
                let end = if m == 12 {
                    days_from_civil(y + 1, 1, 1)
                } else {
                    days_from_civil(y, m + 1, 1)
                };
                (start * 86_400, Some(end * 86_400))
            }
            Period::Year => {
                let (y, _, _) = civil_from_days(day);
                (
                    days_from_civil(y, 1, 1) * 86_400,
                    Some(days_from_civil(y + 1, 1, 1) * 86_400),
                )
            }
            Period::Eternity => (0, None),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, m as u32, d as u32)
}

/// (year, month 1..=12, day) to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// apisonator's `TIME_FORMAT` (`%Y-%m-%d %H:%M:%S %z`), always UTC: `2010-05-15 00:00:00 +0000`.
pub fn format_time(t: i64) -> String {
    let (y, mo, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} +0000",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    fn at(y: i64, m: u32, d: u32, hh: i64, mm: i64, ss: i64) -> i64 {
        days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss
    }

    #[test]
    fn civil_round_trip() {
        for day in -800_000..800_000 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }

    #[test]
    fn minute_hour_day() {
        let t = at(2024, 2, 29, 13, 45, 17);
        assert_eq!(
            Period::Minute.window(t),
            (at(2024, 2, 29, 13, 45, 0), Some(at(2024, 2, 29, 13, 46, 0)))
        );
        assert_eq!(
            Period::Hour.window(t),
            (at(2024, 2, 29, 13, 0, 0), Some(at(2024, 2, 29, 14, 0, 0)))
        );
        assert_eq!(
            Period::Day.window(t),
            (at(2024, 2, 29, 0, 0, 0), Some(at(2024, 3, 1, 0, 0, 0)))
        );
    }

    #[test]
    fn week_starts_monday() {
        // 2024-03-03 is a Sunday; its week started Monday 2024-02-26.
        let sunday = at(2024, 3, 3, 23, 59, 59);
        assert_eq!(
            Period::Week.window(sunday),
            (at(2024, 2, 26, 0, 0, 0), Some(at(2024, 3, 4, 0, 0, 0)))
        );
        let monday = at(2024, 3, 4, 0, 0, 0);
        assert_eq!(Period::Week.window(monday).0, monday);
        // Before the epoch too: 1969-12-31 (Wednesday) is in the week of Monday 1969-12-29.
        assert_eq!(Period::Week.window(-1).0, at(1969, 12, 29, 0, 0, 0));
    }

    #[test]
    fn month_and_year() {
        let t = at(2023, 12, 31, 23, 59, 59);
        assert_eq!(
            Period::Month.window(t),
            (at(2023, 12, 1, 0, 0, 0), Some(at(2024, 1, 1, 0, 0, 0)))
        );
        assert_eq!(
            Period::Year.window(t),
            (at(2023, 1, 1, 0, 0, 0), Some(at(2024, 1, 1, 0, 0, 0)))
        );
        let feb = at(2024, 2, 10, 0, 0, 0);
        assert_eq!(
            Period::Month.window(feb),
            (at(2024, 2, 1, 0, 0, 0), Some(at(2024, 3, 1, 0, 0, 0)))
        );
    }

    #[test]
    fn eternity() {
        assert_eq!(Period::Eternity.window(1_700_000_000), (0, None));
    }

    #[test]
    fn formats_like_apisonator() {
        assert_eq!(
            format_time(at(2010, 5, 15, 0, 0, 0)),
            "2010-05-15 00:00:00 +0000"
        );
        assert_eq!(
            format_time(at(2014, 8, 22, 9, 6, 7)),
            "2014-08-22 09:06:07 +0000"
        );
    }

    #[test]
    fn names() {
        for p in Period::ALL {
            assert_eq!(Period::parse(p.name()).unwrap(), p);
        }
        assert_eq!(Period::parse("second"), None);
    }
}
