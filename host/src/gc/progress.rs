//! Progress through mark and sweep: a bar for a person at a terminal (`berth garbage-collect`),
//! nothing for the server.

/// Told as a run moves on.
pub trait Progress: Send + Sync {
    /// A new phase begins with `total` steps (0: unknown).
    fn phase(&self, _name: &str, _total: u64) {}
    fn inc(&self, _n: u64) {}
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {}

/// An indicatif bar on stderr, one phase after another.
pub struct Bar(indicatif::ProgressBar);

impl Bar {
    pub fn new() -> Bar {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:24} [{elapsed_precise}] {wide_bar} {pos}/{len}")
                .expect("a valid template"),
        );
        Bar(bar)
    }
}

impl Default for Bar {
    fn default() -> Self {
        Bar::new()
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, total: u64) {
        self.0.set_message(name.to_string());
        self.0.set_position(0);
        self.0.set_length(total);
    }

    fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
