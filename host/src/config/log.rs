//! `log`: level and line format.

use serde::Deserialize;

use super::Section;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Log {
    pub level: LogLevel,
    pub formatter: LogFormatter,
}

impl Section for Log {}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// How a log line is written: distribution's `text`, or `json` (its `logstash` is JSON lines too,
/// so a distribution file asking for it gets JSON).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatter {
    #[default]
    Text,
    #[serde(alias = "logstash")]
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::load;

    #[test]
    fn level_and_formatter() {
        let c = load("log: {level: debug, formatter: logstash}\n", &[]).unwrap().config;
        assert_eq!(c.log.level, LogLevel::Debug);
        assert_eq!(c.log.formatter, LogFormatter::Json);
        assert_eq!(load("", &[]).unwrap().config.log.formatter, LogFormatter::Text);
        let e = load("log:\n  level: loud\n", &[]).unwrap_err();
        assert_eq!(e.key, "log.level", "{e}");
        let e = load("log:\n  formatter: xml\n", &[]).unwrap_err();
        assert_eq!(e.key, "log.formatter", "{e}");
    }
}
