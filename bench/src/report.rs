//! The benchmark report: sections of rows, each a measured value with the
//! reference it is compared against, the ratio, and the goal from the issue.
//! Printed as aligned tables, or as one JSON document with `--json`.

use serde::Serialize;
use std::fmt::Write as _;

/// What a number counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Apdus,
    Bytes,
    Micros,
    Millis,
    Seconds,
    /// MiB per second.
    MibPerSec,
    /// Holders (or operations) per second.
    PerSec,
    /// A plain count.
    Count,
    /// A share of a whole, 0..100.
    Percent,
}

impl Unit {
    /// `value` in this unit, formatted for the table.
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Apdus => format!("{v:.0} APDUs"),
            Unit::Bytes => format_bytes(v),
            Unit::Micros if v.abs() < 1.0 => format!("{v:.2} µs"),
            Unit::Micros => format!("{v:.1} µs"),
            Unit::Millis => format!("{v:.2} ms"),
            Unit::Seconds => format!("{v:.2} s"),
            Unit::MibPerSec => format!("{v:.0} MiB/s"),
            Unit::PerSec => format!("{v:.2} /s"),
            Unit::Count => format!("{v:.0}"),
            Unit::Percent => format!("{v:.0} %"),
        }
    }
}

fn format_bytes(v: f64) -> String {
    const KIB: f64 = 1024.0;
    if v >= KIB * KIB * KIB {
        format!("{:.2} GiB", v / (KIB * KIB * KIB))
    } else if v >= KIB * KIB {
        format!("{:.1} MiB", v / (KIB * KIB))
    } else if v >= KIB {
        format!("{:.1} KiB", v / KIB)
    } else {
        format!("{v:.0} B")
    }
}

/// A number with its unit.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Quantity {
    pub value: f64,
    pub unit: Unit,
}

impl Quantity {
    pub fn new(value: f64, unit: Unit) -> Quantity {
        Quantity { value, unit }
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.unit.format(self.value))
    }
}

/// What a goal is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GoalOn {
    Ratio,
    Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = ">")]
    Gt,
}

/// A goal of the issue, e.g. "ratio ≤ 1.10" or "value < 64 MiB".
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Goal {
    pub on: GoalOn,
    pub op: Op,
    pub target: f64,
}

impl Goal {
    pub fn ratio(op: Op, target: f64) -> Goal {
        Goal {
            on: GoalOn::Ratio,
            op,
            target,
        }
    }

    pub fn value(op: Op, target: f64) -> Goal {
        Goal {
            on: GoalOn::Value,
            op,
            target,
        }
    }

    fn holds(&self, x: f64) -> bool {
        match self.op {
            Op::Le => x <= self.target,
            Op::Ge => x >= self.target,
            Op::Lt => x < self.target,
            Op::Gt => x > self.target,
        }
    }

    fn describe(&self, unit: Unit) -> String {
        let op = match self.op {
            Op::Le => "≤",
            Op::Ge => "≥",
            Op::Lt => "<",
            Op::Gt => ">",
        };
        match self.on {
            GoalOn::Ratio => format!("{op} {:.2}", self.target),
            GoalOn::Value => format!("{op} {}", unit.format(self.target)),
        }
    }
}

/// The value a row is compared against.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    pub label: String,
    #[serde(flatten)]
    pub quantity: Quantity,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub measure: String,
    #[serde(flatten)]
    pub value: Quantity,
    pub reference: Option<Reference>,
    /// value / reference (or the ratio the goal names, see `detail`).
    pub ratio: Option<f64>,
    pub goal: Option<Goal>,
    /// Whether the goal holds; `None` without a goal.
    pub met: Option<bool>,
    pub detail: Option<String>,
    /// Why the figure could not be measured or computed (the value is then
    /// meaningless and printed as "not measured"; its goal counts as neither
    /// met nor missed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_measured: Option<String>,
}

impl Row {
    pub fn new(measure: impl Into<String>, value: f64, unit: Unit) -> Row {
        Row {
            measure: measure.into(),
            value: Quantity::new(value, unit),
            reference: None,
            ratio: None,
            goal: None,
            met: None,
            detail: None,
            not_measured: (!value.is_finite()).then(|| "the measurement gave no number".to_string()),
        }
    }

    /// A figure that could not be measured, and why.
    pub fn unmeasured(measure: impl Into<String>, unit: Unit, why: impl Into<String>) -> Row {
        Row {
            not_measured: Some(why.into()),
            ..Row::new(measure, f64::NAN, unit)
        }
    }

    /// Mark the figure as not measured, and why (replaces a generic reason).
    pub fn not_measured(mut self, why: impl Into<String>) -> Row {
        self.not_measured = Some(why.into());
        self.ratio = None;
        self.met = None;
        self
    }

    /// Whether the figure is a number.
    pub fn measured(&self) -> bool {
        self.not_measured.is_none()
    }

    /// Compare against `reference` (same unit); the ratio is value / reference.
    pub fn against(mut self, label: impl Into<String>, reference: f64) -> Row {
        self.reference = Some(Reference {
            label: label.into(),
            quantity: Quantity::new(reference, self.value.unit),
        });
        self.ratio = (reference != 0.0 && reference.is_finite() && self.value.value.is_finite())
            .then(|| self.value.value / reference);
        if !reference.is_finite() && self.not_measured.is_none() {
            self.not_measured = Some("its reference could not be measured".into());
        }
        self
    }

    /// Compare against a reference in another unit, with an explicit ratio.
    pub fn against_with(mut self, label: impl Into<String>, reference: Quantity, ratio: f64) -> Row {
        self.reference = Some(Reference {
            label: label.into(),
            quantity: reference,
        });
        self.ratio = ratio.is_finite().then_some(ratio);
        self
    }

    /// Override the ratio (e.g. a throughput ratio where higher is better).
    pub fn ratio(mut self, ratio: f64) -> Row {
        self.ratio = ratio.is_finite().then_some(ratio);
        self
    }

    pub fn goal(mut self, goal: Goal) -> Row {
        let x = match goal.on {
            GoalOn::Ratio => self.ratio,
            GoalOn::Value => Some(self.value.value),
        };
        self.met = x
            .filter(|x| x.is_finite() && self.not_measured.is_none())
            .map(|x| goal.holds(x));
        self.goal = Some(goal);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Row {
        self.detail = Some(detail.into());
        self
    }
}

/// Which part of the benchmark a section belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// APDUs on the wire per workflow, against the minimum.
    #[value(alias = "apdu")]
    Apdus,
    /// Per-APDU round trip through pcscd + vpcd + applet-sim.
    #[value(alias = "rtt")]
    Roundtrip,
    /// File encryption and decryption against openssl.
    #[value(alias = "file")]
    Files,
    /// Backup and restore throughput, chain restore, vault overhead.
    Backup,
    /// Batch issuance and duplication with 1 and 2 reader pairs.
    #[value(alias = "issuance")]
    Batch,
    /// Vault lookups at 1k and 100k backup rows.
    Vault,
    /// The secure channel: handshake APDUs and time, secure messaging per APDU.
    #[value(alias = "scp11")]
    Secure,
    /// The wallet, safe, storing and replacement exchanges: APDUs against the
    /// minimum; deposits per second from 1 and 4 terminals.
    #[value(alias = "safe")]
    Wallet,
}

impl Part {
    pub fn all() -> Vec<Part> {
        vec![
            Part::Apdus,
            Part::Roundtrip,
            Part::Files,
            Part::Backup,
            Part::Batch,
            Part::Vault,
            Part::Secure,
            Part::Wallet,
        ]
    }
}

/// The result of one part.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub part: Part,
    pub title: String,
    /// Why the part (or all of it) did not run.
    pub skipped: Option<String>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(part: Part, title: impl Into<String>) -> Section {
        Section {
            part,
            title: title.into(),
            skipped: None,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn skipped(part: Part, title: impl Into<String>, why: impl Into<String>) -> Section {
        Section {
            skipped: Some(why.into()),
            ..Section::new(part, title)
        }
    }

    pub fn row(&mut self, r: Row) {
        self.rows.push(r);
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }
}

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub memory_mib: u64,
    pub kernel: String,
    /// `release` or `debug` (debug timings are not representative).
    pub build: &'static str,
    /// The 1-minute load average when the run started and when it ended: other
    /// work on the machine shows here.
    pub load: (f64, f64),
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

impl Machine {
    /// The machine, with the load average at the start of the run.
    pub fn detect(load_at_start: f64) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_mib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .unwrap_or(0);
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_mib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            build: if cfg!(debug_assertions) { "debug" } else { "release" },
            load: (load_at_start, load_average()),
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    /// The settings of the run (sizes, rounds), as given or defaulted.
    pub settings: serde_json::Value,
    pub sections: Vec<Section>,
    pub goals_met: usize,
    pub goals_missed: usize,
    /// Goals whose figure could not be measured (see each row's `not_measured`).
    pub goals_not_measured: usize,
}

impl Report {
    pub fn new(machine: Machine, settings: serde_json::Value, sections: Vec<Section>) -> Report {
        let goals = sections.iter().flat_map(|s| &s.rows).filter_map(|r| r.met);
        let (met, missed) = goals.fold((0, 0), |(m, x), ok| if ok { (m + 1, x) } else { (m, x + 1) });
        let not_measured = sections
            .iter()
            .flat_map(|s| &s.rows)
            .filter(|r| r.goal.is_some() && r.met.is_none())
            .count();
        Report {
            machine,
            settings,
            sections,
            goals_met: met,
            goals_missed: missed,
            goals_not_measured: not_measured,
        }
    }

    /// The report as aligned text tables.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "cardvault-bench: {} ({} CPUs), {} MiB RAM, Linux {}, {} build; load average {:.2} at the start, \
             {:.2} at the end",
            m.cpu, m.cpus, m.memory_mib, m.kernel, m.build, m.load.0, m.load.1
        );
        if m.build == "debug" {
            let _ = writeln!(out, "(debug build: timings are not representative; use --release)");
        }
        for (i, s) in self.sections.iter().enumerate() {
            let _ = writeln!(out, "\n{}. {}", i + 1, s.title);
            if let Some(why) = &s.skipped {
                let _ = writeln!(out, "   skipped: {why}");
            }
            if !s.rows.is_empty() {
                out.push_str(&table(&s.rows));
            }
            for n in &s.notes {
                let _ = writeln!(out, "   - {n}");
            }
        }
        let _ = write!(out, "\ngoals: {} met, {} missed", self.goals_met, self.goals_missed);
        if self.goals_not_measured > 0 {
            let _ = write!(out, ", {} not measured", self.goals_not_measured);
        }
        out.push('\n');
        out
    }
}

fn table(rows: &[Row]) -> String {
    let header = ["measure", "value", "reference", "ratio", "goal", "ok"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.measure.clone(),
                if r.measured() {
                    r.value.to_string()
                } else {
                    "not measured".into()
                },
                r.reference
                    .as_ref()
                    .map(|x| {
                        if x.quantity.value.is_finite() {
                            format!("{} {}", x.label, x.quantity)
                        } else {
                            format!("{} not measured", x.label)
                        }
                    })
                    .unwrap_or_default(),
                r.ratio.map(|x| format!("{x:.2}")).unwrap_or_default(),
                r.goal.map(|g| g.describe(r.value.unit)).unwrap_or_default(),
                match r.met {
                    Some(true) => "yes".into(),
                    Some(false) => "MISSED".into(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut l = String::from("  ");
        for (i, (s, w)) in c.iter().zip(width).enumerate() {
            let pad = w - s.chars().count();
            // Text left, numbers right.
            if i == 0 || i == 2 || i == 4 {
                l.push_str(s);
                l.push_str(&" ".repeat(pad));
            } else {
                l.push_str(&" ".repeat(pad));
                l.push_str(s);
            }
            l.push_str("  ");
        }
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    let mut out = line(&header.map(String::from));
    for (c, r) in cells.iter().zip(rows) {
        out.push_str(&line(c));
        if let Some(why) = &r.not_measured {
            out.push_str(&format!("      not measured: {why}\n"));
        }
        if let Some(d) = &r.detail {
            out.push_str(&format!("      {d}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_and_ratios() {
        let r = Row::new("x", 22.0, Unit::Apdus)
            .against("min", 20.0)
            .goal(Goal::ratio(Op::Le, 1.1));
        assert_eq!(r.met, Some(true));
        assert!((r.ratio.unwrap() - 1.1).abs() < 1e-9);
        let r = Row::new("rss", 70.0 * 1048576.0, Unit::Bytes).goal(Goal::value(Op::Lt, 64.0 * 1048576.0));
        assert_eq!(r.met, Some(false));
        let rep = Report::new(
            Machine::detect(0.0),
            serde_json::json!({}),
            vec![Section {
                rows: vec![r],
                ..Section::new(Part::Files, "files")
            }],
        );
        assert_eq!((rep.goals_met, rep.goals_missed), (0, 1));
        let text = rep.to_text();
        assert!(text.contains("MISSED") && text.contains("< 64.0 MiB"), "{text}");
    }

    #[test]
    fn a_figure_that_cannot_be_computed_says_not_measured_and_why() {
        let rows = vec![
            Row::new("cpu", f64::NAN, Unit::Micros),
            Row::unmeasured("pcscd", Unit::Micros, "no pcscd process found").goal(Goal::value(Op::Lt, 1.0)),
            Row::new("ratio", 5.0, Unit::Micros)
                .against("nothing", f64::NAN)
                .goal(Goal::ratio(Op::Le, 1.1)),
        ];
        assert!(rows.iter().all(|r| !r.measured() && r.met.is_none()));
        let rep = Report::new(
            Machine::detect(0.0),
            serde_json::json!({}),
            vec![Section {
                rows,
                ..Section::new(Part::Roundtrip, "rt")
            }],
        );
        assert_eq!((rep.goals_met, rep.goals_missed, rep.goals_not_measured), (0, 0, 2));
        let text = rep.to_text();
        assert!(!text.contains("NaN") && !text.contains(" inf"), "{text}");
        assert!(text.contains("not measured: no pcscd process found"), "{text}");
        assert!(text.contains("not measured: the measurement gave no number"), "{text}");
        assert!(text.contains("goals: 0 met, 0 missed, 2 not measured"), "{text}");
        let json = serde_json::to_value(&rep).unwrap();
        assert_eq!(json["goals_not_measured"], 2);
        assert_eq!(json["sections"][0]["rows"][1]["not_measured"], "no pcscd process found");
    }

    #[test]
    fn formats_units() {
        assert_eq!(Unit::Bytes.format(65536.0), "64.0 KiB");
        assert_eq!(Unit::Bytes.format(3.0 * 1073741824.0), "3.00 GiB");
        assert_eq!(Unit::Micros.format(61.26), "61.3 µs");
    }
}
