//! The `logging` key: a log filter string (`info`, `info,commissaire_server=debug`), or the
//! original's Python `logging.config.dictConfig` object, mapped onto our level filter and log
//! format where it can be. What cannot be honoured (file handlers, Python format strings) is
//! reported in one warning naming `logging` and why; nothing in a valid dictConfig stops the
//! start.

use serde_json::Value;

use super::{LogFormat, err};

/// What a `logging` value means for this server.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggingSpec {
    /// The tracing filter (`info`, `debug`, `warn,commissaire_server=debug`, ...).
    pub filter: String,
    /// The log format the object asked for, when it asked for one (a JSON formatter).
    pub format: Option<LogFormat>,
    /// The one warning about the parts not honoured, if any.
    pub warning: Option<String>,
}

/// Maps a Python level name (or number) onto a tracing level.
fn level(key: &str, v: &Value) -> Result<&'static str, String> {
    let name = match v {
        Value::String(s) => s.to_ascii_uppercase(),
        Value::Number(n) => match n.as_u64() {
            Some(0) => "NOTSET".into(),
            Some(1..=10) => "DEBUG".into(),
            Some(11..=20) => "INFO".into(),
            Some(21..=30) => "WARNING".into(),
            Some(_) => "ERROR".into(),
            None => String::new(),
        },
        _ => String::new(),
    };
    Ok(match name.as_str() {
        // NOTSET on the root logger lets everything through.
        "NOTSET" | "DEBUG" => "debug",
        "INFO" => "info",
        "WARNING" | "WARN" => "warn",
        "ERROR" | "CRITICAL" | "FATAL" => "error",
        _ => {
            return Err(err(
                key,
                format!(
                    "{v} is not a logging level (DEBUG, INFO, WARNING, ERROR, CRITICAL or NOTSET)"
                ),
            ));
        }
    })
}

/// The Rust log targets an original logger name stands for: `commissaire*` loggers cover the
/// whole server; other names (third-party Python libraries) stand for nothing here.
fn targets_for(logger: &str) -> Option<&'static [&'static str]> {
    if logger == "commissaire" || logger.starts_with("commissaire") {
        Some(&[
            "commissaire_server",
            "commissaire_workers",
            "commissaire_domain",
            "commissaire_store",
            "commissaire_remote",
            "commissaire_kube",
        ])
    } else {
        None
    }
}

/// Interprets a `logging` value (`key` is the spelling used, for messages).
pub fn parse(key: &str, v: &Value) -> Result<LoggingSpec, String> {
    let obj = match v {
        Value::String(s) => {
            tracing_subscriber::EnvFilter::try_new(s).map_err(|e| {
                err(
                    key,
                    format!("{s:?} is not a log filter such as \"info\" or \"info,commissaire_server=debug\" ({e})"),
                )
            })?;
            return Ok(LoggingSpec {
                filter: s.clone(),
                format: None,
                warning: None,
            });
        }
        Value::Object(o) => o,
        other => {
            return Err(err(
                key,
                format!("must be a log filter string or a Python dictConfig object, got {other}"),
            ));
        }
    };
    let mut ignored: Vec<String> = Vec::new();
    let root_level = match obj.get("root") {
        Some(Value::Object(root)) => root.get("level").map(|l| level(key, l)).transpose()?,
        Some(other) => return Err(err(key, format!("\"root\" must be an object, got {other}"))),
        None => None,
    };
    let mut directives: Vec<String> = Vec::new();
    let mut commissaire_level = None;
    if let Some(loggers) = obj.get("loggers") {
        let Value::Object(loggers) = loggers else {
            return Err(err(
                key,
                format!("\"loggers\" must be an object, got {loggers}"),
            ));
        };
        for (name, l) in loggers {
            let Some(l) = l.as_object() else {
                return Err(err(key, format!("logger {name:?} must be an object")));
            };
            let Some(lv) = l.get("level") else { continue };
            let lv = level(key, lv)?;
            match targets_for(name) {
                Some(_) if name == "commissaire" => commissaire_level = Some(lv),
                Some(targets) => {
                    directives.extend(targets.iter().map(|t| format!("{t}={lv}")));
                }
                None => ignored.push(format!("logger {name:?} names no component of this server")),
            }
        }
    }
    // The default level: the root logger's, else the `commissaire` logger's, else info.
    let base = root_level.or(commissaire_level).unwrap_or("info");
    let mut filter = base.to_string();
    if let (Some(c), Some(_)) = (commissaire_level, root_level) {
        for t in targets_for("commissaire").unwrap_or(&[]) {
            filter.push_str(&format!(",{t}={c}"));
        }
    }
    for d in directives {
        filter.push(',');
        filter.push_str(&d);
    }
    let mut format = None;
    if let Some(Value::Object(formatters)) = obj.get("formatters") {
        for (name, f) in formatters {
            let class = f
                .get("()")
                .or_else(|| f.get("class"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if class.to_ascii_lowercase().contains("json") {
                format = Some(LogFormat::Json);
            } else if f.get("format").is_some() || f.get("fmt").is_some() {
                ignored.push(format!(
                    "formatter {name:?}: Python format strings are not used (lines carry time, level, component and fields; log-format json gives one JSON object per line)"
                ));
            }
        }
    }
    if let Some(Value::Object(handlers)) = obj.get("handlers") {
        for (name, h) in handlers {
            let class = h.get("class").and_then(Value::as_str).unwrap_or("");
            if !class.ends_with("StreamHandler") {
                ignored.push(format!(
                    "handler {name:?} ({class}): logs go to standard output only (the journal or the container runtime keeps them)"
                ));
            }
        }
    }
    let warning = (!ignored.is_empty()).then(|| {
        format!(
            "configuration key {key:?}: level {filter:?}{} taken from the dictConfig; not used: {}",
            match format {
                Some(LogFormat::Json) => " and JSON lines",
                _ => "",
            },
            ignored.join("; ")
        )
    });
    Ok(LoggingSpec {
        filter,
        format,
        warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dictconfig_maps_levels_and_reports_the_rest_once() {
        let s = parse(
            "logging",
            &json!({
                "version": 1,
                "formatters": {"plain": {"format": "%(name)s(%(levelname)s): %(message)s"}},
                "handlers": {
                    "console": {"class": "logging.StreamHandler", "formatter": "plain"},
                    "file": {"class": "logging.FileHandler", "filename": "/var/log/c.log"}
                },
                "root": {"level": "WARNING", "handlers": ["console"]},
                "loggers": {"commissaire": {"level": "DEBUG"}, "urllib3": {"level": "ERROR"}}
            }),
        )
        .unwrap();
        assert!(s.filter.starts_with("warn,"), "{}", s.filter);
        assert!(
            s.filter.contains("commissaire_server=debug"),
            "{}",
            s.filter
        );
        tracing_subscriber::EnvFilter::try_new(&s.filter).unwrap();
        let w = s.warning.unwrap();
        assert!(
            w.contains("\"logging\"") && w.contains("urllib3") && w.contains("FileHandler"),
            "{w}"
        );
        assert_eq!(s.format, None);

        let s = parse("logging", &json!({"version": 1, "root": {"level": "INFO"}})).unwrap();
        assert_eq!(s.filter, "info");
        assert_eq!(s.warning, None);
        let s = parse(
            "logging",
            &json!({"formatters": {"j": {"()": "pythonjsonlogger.jsonlogger.JsonFormatter"}}}),
        )
        .unwrap();
        assert_eq!(s.format, Some(LogFormat::Json));
        assert!(parse("logging", &json!({"root": {"level": "LOUD"}})).is_err());
        assert!(parse("logging", &json!(3)).is_err());
        assert_eq!(parse("logging", &json!("debug")).unwrap().filter, "debug");
    }
}
