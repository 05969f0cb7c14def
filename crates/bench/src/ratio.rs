//! The data of the ratio charts, one per case (`<case>.png`, drawn by
//! `plot.rs` into `--plots`): each path's figure over the baseline that the
//! case measures in the same run, the baseline itself a bar at 1, and the
//! case's ratio targets as lines. A case whose figures go different ways
//! (latency: lower is better; throughput: higher is better) gets one panel
//! per way, so that every axis reads one way. Each case's module builds its
//! chart from its figures, with the same ratios as its Markdown table.

/// The system of a baseline bar (its colour).
pub(crate) const BASELINE: &str = "baseline";

/// One bar: a path's figure over its panel's baseline.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Bar {
    pub(crate) label: String,
    pub(crate) ratio: f64,
    /// Who the path belongs to: [`BASELINE`], "guestcomm", "qemu-ga",
    /// "OpenSSH", "local" (a program of this host); gives the colour.
    pub(crate) system: &'static str,
}

/// A target, drawn as a line across the panel at `at`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Target {
    pub(crate) label: String,
    pub(crate) at: f64,
}

/// The bars of one baseline, read one way.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Panel {
    pub(crate) title: String,
    /// The x axis: what the ratio is over, and which way is better.
    pub(crate) axis: String,
    pub(crate) bars: Vec<Bar>,
    pub(crate) targets: Vec<Target>,
}

impl Panel {
    pub(crate) fn new(title: impl Into<String>, axis: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            axis: axis.into(),
            bars: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// The baseline's bar: 1, labelled "baseline: `what`".
    pub(crate) fn baseline(self, what: &str) -> Self {
        self.bar(&format!("baseline: {what}"), 1.0, BASELINE)
    }

    /// A path's bar at `ratio`.
    pub(crate) fn bar(mut self, label: &str, ratio: f64, system: &'static str) -> Self {
        self.bars.push(Bar {
            label: label.to_string(),
            ratio,
            system,
        });
        self
    }

    /// A target line at `at`.
    pub(crate) fn target(mut self, label: &str, at: f64) -> Self {
        self.targets.push(Target {
            label: label.to_string(),
            at,
        });
        self
    }

    /// The ratio of the bar labelled `label`, if any.
    #[cfg(test)]
    pub(crate) fn ratio_of(&self, label: &str) -> Option<f64> {
        self.bars.iter().find(|b| b.label == label).map(|b| b.ratio)
    }
}

/// One case's chart: its file is `NAME.png`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RatioChart {
    pub(crate) name: &'static str,
    pub(crate) title: String,
    pub(crate) panels: Vec<Panel>,
}

impl RatioChart {
    pub(crate) fn new(name: &'static str, title: impl Into<String>, panels: Vec<Panel>) -> Self {
        Self {
            name,
            title: title.into(),
            panels,
        }
    }

    /// The chart's file name, as the reports name it (`docs/img/NAME.png`).
    pub(crate) fn file_name(&self) -> String {
        format!("{}.png", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panel_keeps_its_bars_in_order_with_the_baseline_at_one() {
        let p = Panel::new("exec", "× local")
            .baseline("local")
            .bar("CLI", 2.0, "guestcomm")
            .target("CLI ≤ 3×", 3.0);
        assert_eq!(p.bars[0].label, "baseline: local");
        assert_eq!(p.bars[0].system, BASELINE);
        assert_eq!(p.ratio_of("baseline: local"), Some(1.0));
        assert_eq!(p.ratio_of("CLI"), Some(2.0));
        assert_eq!(p.ratio_of("nothing"), None);
        assert_eq!(p.targets[0].at, 3.0);
        assert_eq!(
            RatioChart::new("exec", "t", vec![p]).file_name(),
            "exec.png"
        );
    }
}
