//! Where an operation's time went, step by step, for a debug log line: the
//! steps of a delete run in two processes and several kernel subsystems, and
//! only a breakdown shows which of them grows with the number of sessions.

use std::fmt;
use std::time::{Duration, Instant};

pub struct Stopwatch {
    started: Instant,
    last: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Stopwatch {
    pub fn start() -> Self {
        let now = Instant::now();
        Self { started: now, last: now, laps: Vec::new() }
    }

    /// Ends step `name`: the time since the last lap (or the start).
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }
}

/// `total 12.3ms: kill 4.1ms, cgroups 6.0ms, ...`
impl fmt::Display for Stopwatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(f, "total {:.1}ms:", ms(self.last - self.started))?;
        for (i, (name, d)) in self.laps.iter().enumerate() {
            write!(f, "{} {name} {:.1}ms", if i == 0 { "" } else { "," }, ms(*d))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_to_the_total() {
        let mut w = Stopwatch::start();
        std::thread::sleep(Duration::from_millis(2));
        w.lap("one");
        w.lap("two");
        let shown = w.to_string();
        assert!(shown.starts_with("total "), "{shown}");
        assert!(shown.contains(": one ") && shown.contains(", two "), "{shown}");
        let sum: Duration = w.laps.iter().map(|l| l.1).sum();
        assert_eq!(sum, w.last - w.started);
    }
}
