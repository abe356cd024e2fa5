//! Small value types that the config spells as strings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// One rate window: at most `count` requests in any `period` (`"5/1m"`, `"5000/1d"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct RateLimit {
    pub count: u32,
    pub period: Duration,
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hint = || {
            format!(
                "`{text}` is not a rate limit; write COUNT/DURATION, e.g. \"5/1m\" or \"5000/1d\""
            )
        };
        let (count, period) = text.split_once('/').ok_or_else(hint)?;
        let count: u32 = count.trim().parse().map_err(|_| hint())?;
        let period = humantime::parse_duration(period.trim()).map_err(|_| hint())?;
        if count == 0 || period.is_zero() {
            return Err(format!(
                "`{text}`: count and period must both be above zero"
            ));
        }
        Ok(RateLimit { count, period })
    }
}

impl TryFrom<String> for RateLimit {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            // As people write them: `5000/1d` (humantime would say `1day`).
            if self.period.as_secs() % 86_400 == 0 && self.period.subsec_nanos() == 0 {
                format!("{}d", self.period.as_secs() / 86_400)
            } else {
                humantime::format_duration(self.period).to_string()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_count_and_human_period() {
        assert_eq!(
            "5/1m".parse::<RateLimit>().unwrap(),
            RateLimit {
                count: 5,
                period: Duration::from_secs(60)
            }
        );
        assert_eq!(
            "5000/1d".parse::<RateLimit>().unwrap().period,
            Duration::from_secs(86_400)
        );
        assert_eq!("5/2s".parse::<RateLimit>().unwrap().to_string(), "5/2s");
        assert_eq!(
            "5000/1d".parse::<RateLimit>().unwrap().to_string(),
            "5000/1d"
        );
        assert_eq!("5/1m".parse::<RateLimit>().unwrap().to_string(), "5/1m");
    }

    #[test]
    fn rejects_malformed_and_zero() {
        for bad in ["5", "five/1m", "5/soon", "0/1m", "5/0s", ""] {
            assert!(
                bad.parse::<RateLimit>().is_err(),
                "{bad} should be rejected"
            );
        }
    }
}
