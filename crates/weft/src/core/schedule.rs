//! When a scheduled input acts: every `interval` (the first time at once), or on a `cron`
//! schedule (5 fields, or 6 with seconds first, in UTC).

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::config::BuildError;
use crate::config::units::Dur;

pub enum Schedule {
    Every(Duration),
    Cron(Box<Cron>),
}

impl Schedule {
    /// From an input's `interval` / `cron` fields; `default` when neither is given.
    pub fn from_config(
        interval: Option<&Dur>,
        cron: Option<&str>,
        default: Duration,
    ) -> Result<Schedule, Vec<BuildError>> {
        match (interval, cron) {
            (Some(_), Some(_)) => Err(vec![BuildError::new(
                "cron",
                "give either `interval` or `cron`, not both",
            )]),
            (_, Some(expr)) => CronParser::builder()
                .seconds(Seconds::Optional)
                .build()
                .parse(expr)
                .map(|c| Schedule::Cron(Box::new(c)))
                .map_err(|e| {
                    vec![BuildError::new(
                        "cron",
                        format!("invalid cron `{expr}`: {e}"),
                    )]
                }),
            (Some(Dur(d)), None) if d.is_zero() => Err(vec![BuildError::new(
                "interval",
                "interval must be more than zero",
            )]),
            (interval, None) => Ok(Schedule::Every(interval.map_or(default, |d| d.0))),
        }
    }

    pub fn ticker(&self) -> Ticker<'_> {
        let interval = match self {
            Schedule::Every(d) => {
                let mut t = tokio::time::interval(*d);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Some(t)
            }
            Schedule::Cron(_) => None,
        };
        Ticker {
            schedule: self,
            interval,
            last_fired: chrono::Utc::now(),
        }
    }
}

pub struct Ticker<'s> {
    schedule: &'s Schedule,
    interval: Option<tokio::time::Interval>,
    /// The last cron occurrence fired: the next one is searched after it, so a wall clock that
    /// steps back cannot fire the same occurrence twice.
    last_fired: chrono::DateTime<chrono::Utc>,
}

impl Ticker<'_> {
    /// Waits for the next time to act (never returns for a cron without a next occurrence).
    pub async fn tick(&mut self) {
        match (&mut self.interval, self.schedule) {
            (Some(t), _) => {
                t.tick().await;
            }
            (None, Schedule::Cron(cron)) => {
                let now = chrono::Utc::now();
                match cron.find_next_occurrence(&self.last_fired.max(now), false) {
                    Ok(next) => {
                        tokio::time::sleep((next - now).to_std().unwrap_or_default()).await;
                        self.last_fired = next;
                    }
                    Err(_) => std::future::pending().await,
                }
            }
            (None, Schedule::Every(_)) => unreachable!("an interval always has a ticker"),
        }
    }
}
