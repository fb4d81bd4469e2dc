//! Progress of the long command-line runs (`export`, `import`, `projections rebuild`), drawn on
//! standard error only when it is a terminal: indicatif hides its bars anywhere else, so a file,
//! a pipe or a log collector gets nothing but the command's own lines.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const TICK: Duration = Duration::from_millis(120);

/// A bar over `total` units, `unit` naming them ("events", "bytes").
pub fn bar(total: u64, doing: &'static str, unit: &'static str) -> ProgressBar {
    let template = match unit {
        "bytes" => "{msg} [{bar:30}] {bytes}/{total_bytes} ({elapsed})",
        _ => "{msg} [{bar:30}] {pos}/{len} {prefix} ({elapsed})",
    };
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        .with_style(style.progress_chars("=> "))
        .with_message(doing)
        .with_prefix(unit);
    bar.enable_steady_tick(TICK);
    bar
}

/// A spinner for work whose size is not known, such as one long transaction.
pub fn spinner(doing: &'static str) -> ProgressBar {
    let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let spinner =
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style).with_message(doing);
    spinner.enable_steady_tick(TICK);
    spinner
}
