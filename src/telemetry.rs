//! Logging: `tracing` to standard error (standard output is for command results).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The HTTP client's own logs name the hosts it connects to (webhook endpoints, which customers
/// consider private) from `debug` on: they stay at `info` whatever `RUST_LOG` asks.
const QUIET_CLIENT: [&str; 3] = ["reqwest=info", "hyper=info", "hyper_util=info"];

pub fn init(format: LogFormat) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref());
    // Colour codes only for a person at a terminal: in a file or a log collector they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

/// The broker client logs every failure it hands us as errors of its own, three lines for one
/// refused connection; the relay and the webhook worker report each, once. Its lines are shown
/// only when `RUST_LOG` names it.
const BROKER_CLIENT: &str = "lapin=off";

/// `RUST_LOG` (or the default, `info,sqlx=warn`), with the HTTP client kept quiet and the broker
/// client silent unless named.
fn filter(rust_log: Option<&str>) -> EnvFilter {
    let mut filter =
        rust_log.and_then(|text| EnvFilter::try_new(text).ok()).unwrap_or_else(|| EnvFilter::new("info,sqlx=warn"));
    if !rust_log.is_some_and(|text| text.contains("lapin")) {
        if let Ok(directive) = BROKER_CLIENT.parse() {
            filter = filter.add_directive(directive);
        }
    }
    QUIET_CLIENT
        .iter()
        .filter_map(|directive| directive.parse().ok())
        .fold(filter, |filter, directive| filter.add_directive(directive))
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn the_http_client_stays_quiet_even_at_debug() {
        for rust_log in ["debug", "trace", "reqwest=trace,hyper_util=debug"] {
            let subscriber = tracing_subscriber::registry().with(filter(Some(rust_log)));
            tracing::subscriber::with_default(subscriber, || {
                assert!(!tracing::enabled!(target: "reqwest::connect", Level::DEBUG), "{rust_log}");
                assert!(!tracing::enabled!(target: "hyper_util::client::legacy::connect::http", Level::DEBUG));
                assert!(tracing::enabled!(target: "reqwest::connect", Level::INFO));
            });
        }
        let subscriber = tracing_subscriber::registry().with(filter(Some("debug")));
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(target: "credential_ledger::webhooks", Level::DEBUG));
        });
    }

    #[test]
    fn the_broker_client_speaks_only_when_named() {
        for rust_log in [None, Some("info"), Some("trace")] {
            let subscriber = tracing_subscriber::registry().with(filter(rust_log));
            tracing::subscriber::with_default(subscriber, || {
                assert!(!tracing::enabled!(target: "lapin::channels", Level::ERROR), "{rust_log:?}");
                assert!(tracing::enabled!(target: "credential_ledger::bus::relay", Level::WARN));
            });
        }
        let subscriber = tracing_subscriber::registry().with(filter(Some("info,lapin=debug")));
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(target: "lapin::channels", Level::DEBUG));
        });
    }
}
