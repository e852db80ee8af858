//! The doctor's report: sections of findings, each fine, a hint or a
//! problem with its fix.

use std::fmt::Write;

/// How a finding counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// As it should be.
    Ok,
    /// Worth knowing; not counted as a problem.
    Hint,
    /// Stops nodes finding or reaching each other.
    Problem,
}

/// One thing checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// How it counts.
    pub(crate) level: Level,
    /// What was found.
    pub(crate) what: String,
    /// How to fix it (for problems and hints).
    pub(crate) fix: Option<String>,
}

impl Finding {
    /// A check that passed.
    pub(crate) fn ok(what: impl Into<String>) -> Finding {
        Finding {
            level: Level::Ok,
            what: what.into(),
            fix: None,
        }
    }

    /// Something worth knowing.
    pub(crate) fn hint(what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Hint,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }

    /// A problem, and its fix.
    pub(crate) fn problem(what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Problem,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}

/// All sections, in the order checked.
#[derive(Debug, Default)]
pub(crate) struct Report {
    sections: Vec<(String, Vec<Finding>)>,
}

impl Report {
    /// Adds a section.
    pub(crate) fn section(&mut self, title: impl Into<String>, findings: Vec<Finding>) {
        self.sections.push((title.into(), findings));
    }

    /// How many problems were found.
    pub(crate) fn problems(&self) -> usize {
        self.sections
            .iter()
            .flat_map(|(_, f)| f)
            .filter(|f| f.level == Level::Problem)
            .count()
    }

    /// The report as text, ending with the diagnosis.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for (title, findings) in &self.sections {
            let _ = writeln!(out, "{title}");
            for f in findings {
                let label = match f.level {
                    Level::Ok => "ok",
                    Level::Hint => "hint",
                    Level::Problem => "PROBLEM",
                };
                let _ = writeln!(out, "  {label:<8} {}", f.what);
                if let Some(fix) = &f.fix {
                    let _ = writeln!(out, "  {:<8} fix: {fix}", "");
                }
            }
            out.push('\n');
        }
        let _ = match self.problems() {
            0 => writeln!(out, "healthy: no problem found"),
            1 => writeln!(out, "1 problem found"),
            n => writeln!(out, "{n} problems found"),
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_counted_and_fixes_shown() {
        let mut r = Report::default();
        r.section("interfaces", vec![Finding::ok("lo: up")]);
        assert_eq!(r.problems(), 0);
        assert!(r.render().ends_with("healthy: no problem found\n"));
        r.section(
            "clock",
            vec![
                Finding::hint("not synchronized", "run chrony"),
                Finding::problem("lan0: multicast off", "ip link set lan0 multicast on"),
            ],
        );
        assert_eq!(r.problems(), 1);
        let text = r.render();
        assert!(text.contains(
            "  PROBLEM  lan0: multicast off\n           fix: ip link set lan0 multicast on\n"
        ));
        assert!(text.ends_with("1 problem found\n"));
    }
}
