//! Progress bars on stderr for the steps that take seconds to minutes (loading a file,
//! generating random weights, uploading to the GPU), shared by every command.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar in `template`'s style (indicatif's template language), length set as it goes.
pub fn bar(template: &str) -> ProgressBar {
    let b = ProgressBar::new(0);
    b.set_style(
        ProgressStyle::with_template(template)
            .expect("static template")
            .progress_chars("=> "),
    );
    b
}

/// The `progress(done, total)` callback the model crates take, moving `b`.
pub fn follow(b: &ProgressBar) -> impl FnMut(usize, usize) + '_ {
    |done, total| {
        b.set_length(total as u64);
        b.set_position(done as u64);
    }
}
