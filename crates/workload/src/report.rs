//! What a workload run measured and what its checker found, and the table printed at the end.
//!
//! Each client task keeps its own [`KindStats`] per [`OpKind`] (no shared locks on the hot
//! path); the driver merges them when the run ends. Latencies are end-to-end as the caller
//! sees them (retries included), recorded in microseconds in an HDR histogram with 3
//! significant digits; only successful operations are recorded, failures are counted by
//! [`ErrorClass`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use client::Code;
use comfy_table::{CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use hdrhistogram::Histogram;

/// Longest latency a histogram holds (longer ones are recorded as this): one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The kinds of operation a workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// A read-write transaction moving money between two accounts.
    Transfer,
    /// A strong read-only transaction reading every balance.
    ReadStrong,
    /// A read-only transaction reading every balance at an exact staleness.
    ReadStale,
    /// The same, served by followers.
    ReadFollower,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 4] = [
        OpKind::Transfer,
        OpKind::ReadStrong,
        OpKind::ReadStale,
        OpKind::ReadFollower,
    ];

    /// The name in the report and the history.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Transfer => "transfer",
            OpKind::ReadStrong => "read-strong",
            OpKind::ReadStale => "read-stale",
            OpKind::ReadFollower => "read-follower",
        }
    }
}

/// How a failed operation is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorClass {
    /// `aborted` until the client's retry budget ran out.
    AbortedAfterRetries,
    /// The commit's outcome is unknown: it may or may not have applied.
    Indeterminate,
    /// No node could serve it (after the client's retries).
    Unavailable,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// Every class, in report order.
    pub const ALL: [ErrorClass; 4] = [
        ErrorClass::AbortedAfterRetries,
        ErrorClass::Indeterminate,
        ErrorClass::Unavailable,
        ErrorClass::Other,
    ];

    /// The class of an error with `code`.
    pub fn of(code: Code) -> ErrorClass {
        match code {
            Code::Aborted => ErrorClass::AbortedAfterRetries,
            Code::Indeterminate => ErrorClass::Indeterminate,
            Code::Unavailable => ErrorClass::Unavailable,
            _ => ErrorClass::Other,
        }
    }

    /// The name in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::AbortedAfterRetries => "aborted",
            ErrorClass::Indeterminate => "indeterminate",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Other => "other",
        }
    }
}

/// Counts and latencies of one kind of operation.
#[derive(Debug, Clone)]
pub struct KindStats {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed, by class.
    pub errors: BTreeMap<ErrorClass, u64>,
    /// Retries the client made for operations that succeeded (`attempts - 1`, summed).
    pub retries: u64,
    /// Those retries by reason (`aborted: Wounded`, `unavailable`, ...).
    pub retry_reasons: BTreeMap<String, u64>,
    latency_us: Histogram<u64>,
}

impl Default for KindStats {
    fn default() -> KindStats {
        KindStats::new()
    }
}

impl KindStats {
    /// No operations yet.
    pub fn new() -> KindStats {
        KindStats {
            ok: 0,
            errors: BTreeMap::new(),
            retries: 0,
            retry_reasons: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("constant bounds: 1 <= low, high >= 2 * low, 3 significant digits"),
        }
    }

    /// A success that took `latency` after `attempts` attempts.
    pub fn record_ok(&mut self, latency: Duration, attempts: u32) {
        self.ok += 1;
        self.retries += u64::from(attempts.saturating_sub(1));
        let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_LATENCY_US);
        self.latency_us
            .saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Why a success's earlier attempts were retried.
    pub fn record_retry_reasons(&mut self, reasons: &[String]) {
        for reason in reasons {
            *self.retry_reasons.entry(reason.clone()).or_default() += 1;
        }
    }

    /// A failure of `class`.
    pub fn record_error(&mut self, class: ErrorClass) {
        *self.errors.entry(class).or_default() += 1;
    }

    /// Adds `other`'s counts and latencies to these.
    pub fn merge(&mut self, other: &KindStats) {
        self.ok += other.ok;
        self.retries += other.retries;
        for (reason, n) in &other.retry_reasons {
            *self.retry_reasons.entry(reason.clone()).or_default() += n;
        }
        for (class, n) in &other.errors {
            *self.errors.entry(*class).or_default() += n;
        }
        // Same bounds on both sides, so nothing can fall out of range.
        let _ = self.latency_us.add(&other.latency_us);
    }

    /// Failures of `class`.
    pub fn errors_of(&self, class: ErrorClass) -> u64 {
        self.errors.get(&class).copied().unwrap_or(0)
    }

    /// Operations that ended, successful or not.
    pub fn count(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }

    /// Successful operations per second over `elapsed`.
    pub fn throughput(&self, elapsed: Duration) -> f64 {
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// The latency at `percentile` (0-100) of successful operations, if there were any.
    pub fn latency_at(&self, percentile: f64) -> Option<Duration> {
        (self.ok > 0)
            .then(|| Duration::from_micros(self.latency_us.value_at_percentile(percentile)))
    }

    /// The longest latency of a successful operation.
    pub fn max_latency(&self) -> Option<Duration> {
        (self.ok > 0).then(|| Duration::from_micros(self.latency_us.max()))
    }
}

/// What the bank checker concluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The total every read must sum to.
    pub initial_total: i64,
    /// Accounts in the bank.
    pub accounts: usize,
    /// Reads of every balance checked (the first and the final strong read included).
    pub reads_checked: u64,
    /// Reads whose balances did not sum to the total.
    pub wrong_totals: u64,
    /// Negative balances seen, over all reads.
    pub negative_balances: u64,
    /// The total of the strong read after the run, if it succeeded.
    pub final_total: Option<i64>,
    /// Acknowledged transfers missing from the transfer log after the run (lost commits).
    pub lost_transfers: u64,
    /// Indeterminate transfers found applied in the log after the run (the rest were not;
    /// none can be applied twice: the log's key is the transfer's id).
    pub indeterminate_applied: u64,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

impl Verdict {
    /// How many examples a verdict keeps.
    pub const MAX_EXAMPLES: usize = 5;

    /// Checks one read of every balance; `what` names it in examples.
    pub fn check_read(&mut self, balances: &[i64], what: &str) {
        self.reads_checked += 1;
        let violations = checker::bank::check(&[balances.to_vec()], self.initial_total);
        for violation in violations {
            let text = match violation {
                checker::bank::BankViolation::WrongTotal { sum, .. } => {
                    self.wrong_totals += 1;
                    format!("{what}: total {sum}, expected {}", self.initial_total)
                }
                checker::bank::BankViolation::Negative { account, .. } => {
                    self.negative_balances += 1;
                    let balance = balances.get(account).copied().unwrap_or_default();
                    format!("{what}: account #{account} has {balance}")
                }
            };
            if self.examples.len() < Verdict::MAX_EXAMPLES {
                self.examples.push(text);
            }
        }
    }

    /// Adds a task's counts to these (the totals and account count are the driver's).
    pub fn merge(&mut self, other: &Verdict) {
        self.reads_checked += other.reads_checked;
        self.wrong_totals += other.wrong_totals;
        self.negative_balances += other.negative_balances;
        for example in &other.examples {
            if self.examples.len() < Verdict::MAX_EXAMPLES {
                self.examples.push(example.clone());
            }
        }
    }

    /// Every violation: wrong totals, negative balances, and a final total that differs from
    /// the initial one (or is missing).
    pub fn violations(&self) -> u64 {
        let final_wrong = self.final_total != Some(self.initial_total);
        self.wrong_totals + self.negative_balances + u64::from(final_wrong) + self.lost_transfers
    }
}

/// Everything a bank run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed of the run's randomness.
    pub seed: u64,
    /// Concurrent client tasks.
    pub clients: usize,
    /// From the first operation to the last one's end.
    pub elapsed: Duration,
    /// Counts and latencies per kind.
    pub stats: BTreeMap<OpKind, KindStats>,
    /// What the checker found.
    pub verdict: Verdict,
}

impl Report {
    /// The stats of `kind` (empty if none ran).
    pub fn kind(&self, kind: OpKind) -> KindStats {
        self.stats.get(&kind).cloned().unwrap_or_default()
    }

    /// Transfers whose outcome is unknown.
    pub fn transfers_indeterminate(&self) -> u64 {
        self.kind(OpKind::Transfer)
            .errors_of(ErrorClass::Indeterminate)
    }

    /// The report table and the checker's verdict, as printed at the end of a run.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} clients for {:.1}s, seed {}",
            self.clients,
            self.elapsed.as_secs_f64(),
            self.seed
        );
        out.push_str(&self.table().to_string());
        out.push('\n');
        let reasons = self.kind(OpKind::Transfer).retry_reasons;
        if !reasons.is_empty() {
            let listed: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = writeln!(out, "transfer retries by reason: {}", listed.join(", "));
        }
        out.push_str(&self.render_verdict());
        out
    }

    fn table(&self) -> Table {
        let mut table = Table::new();
        table.load_style(UTF8_FULL_CONDENSED);
        let mut header = vec![
            "kind", "ok", "ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
        ];
        header.extend(ErrorClass::ALL.iter().map(|c| c.as_str()));
        header.push("retries");
        table.set_header(header);
        for kind in OpKind::ALL {
            let Some(stats) = self.stats.get(&kind) else {
                continue;
            };
            if stats.count() == 0 {
                continue;
            }
            let ms = |d: Option<Duration>| {
                d.map_or_else(
                    || "-".to_string(),
                    |d| format!("{:.2}", d.as_secs_f64() * 1e3),
                )
            };
            let mut row = vec![
                kind.as_str().to_string(),
                stats.ok.to_string(),
                format!("{:.1}", stats.throughput(self.elapsed)),
                ms(stats.latency_at(50.0)),
                ms(stats.latency_at(95.0)),
                ms(stats.latency_at(99.0)),
                ms(stats.max_latency()),
            ];
            row.extend(
                ErrorClass::ALL
                    .iter()
                    .map(|c| stats.errors_of(*c).to_string()),
            );
            // The client retries read-only transactions too, but does not say how often.
            row.push(match kind {
                OpKind::Transfer => stats.retries.to_string(),
                OpKind::ReadStrong | OpKind::ReadStale | OpKind::ReadFollower => "n/a".to_string(),
            });
            table.add_row(row);
        }
        for column in table.column_iter_mut().skip(1) {
            column.set_cell_alignment(CellAlignment::Right);
        }
        table
    }

    fn render_verdict(&self) -> String {
        let v = &self.verdict;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "checker: {} reads of all {} accounts checked; wrong totals: {}; negative \
             balances: {}",
            v.reads_checked, v.accounts, v.wrong_totals, v.negative_balances
        );
        let final_total = v.final_total.map_or_else(
            || "missing (the final read failed)".to_string(),
            |t| t.to_string(),
        );
        let _ = writeln!(
            out,
            "final strong read: total {final_total}, initial total {}",
            v.initial_total
        );
        let _ = writeln!(
            out,
            "transfers that ended indeterminate: {} (each applied whole or not at all; {} applied)",
            self.transfers_indeterminate(),
            v.indeterminate_applied
        );
        let _ = writeln!(
            out,
            "acknowledged transfers missing from the transfer log: {}",
            v.lost_transfers
        );
        for example in &v.examples {
            let _ = writeln!(out, "  violation: {example}");
        }
        let violations = v.violations();
        if violations == 0 {
            out.push_str("verdict: OK\n");
        } else {
            let _ = writeln!(out, "verdict: {violations} VIOLATION(S)");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_throughput_and_retries_add_up() {
        let mut stats = KindStats::new();
        for i in 1..=100 {
            stats.record_ok(ms(i), if i % 10 == 0 { 3 } else { 1 });
        }
        stats.record_error(ErrorClass::of(Code::Indeterminate));
        stats.record_error(ErrorClass::of(Code::Aborted));
        stats.record_error(ErrorClass::of(Code::Syntax));
        assert_eq!(stats.ok, 100);
        assert_eq!(stats.count(), 103);
        assert_eq!(stats.retries, 20);
        assert_eq!(stats.errors_of(ErrorClass::Indeterminate), 1);
        assert_eq!(stats.errors_of(ErrorClass::Other), 1);
        assert_eq!(stats.errors_of(ErrorClass::Unavailable), 0);
        assert!((stats.throughput(Duration::from_secs(4)) - 25.0).abs() < 1e-9);
        assert_eq!(stats.throughput(Duration::ZERO), 0.0);
        // 3 significant digits: within 0.1 %.
        let near = |d: Option<Duration>, want: u64| {
            let got = d.unwrap().as_micros() as f64;
            let want = (want * 1000) as f64;
            assert!((got - want).abs() <= want * 0.001, "{got} vs {want}");
        };
        near(stats.latency_at(50.0), 50);
        near(stats.latency_at(95.0), 95);
        near(stats.latency_at(99.0), 99);
        near(stats.max_latency(), 100);
        assert_eq!(KindStats::new().latency_at(50.0), None);
    }

    #[test]
    fn merged_stats_equal_stats_recorded_in_one_place() {
        let (mut a, mut b, mut all) = (KindStats::new(), KindStats::new(), KindStats::new());
        for i in 1..=50 {
            a.record_ok(ms(i), 2);
            all.record_ok(ms(i), 2);
        }
        for i in 51..=100 {
            b.record_ok(ms(i), 1);
            all.record_ok(ms(i), 1);
        }
        b.record_error(ErrorClass::Unavailable);
        all.record_error(ErrorClass::Unavailable);
        a.merge(&b);
        assert_eq!(a.ok, all.ok);
        assert_eq!(a.retries, all.retries);
        assert_eq!(a.errors, all.errors);
        for p in [50.0, 95.0, 99.0, 100.0] {
            assert_eq!(a.latency_at(p), all.latency_at(p));
        }
    }

    #[test]
    fn the_verdict_counts_wrong_totals_negatives_and_the_final_total() {
        let mut verdict = Verdict {
            initial_total: 100,
            accounts: 2,
            ..Verdict::default()
        };
        verdict.check_read(&[50, 50], "read 1");
        verdict.final_total = Some(100);
        assert_eq!(verdict.violations(), 0);

        verdict.check_read(&[60, 50], "read 2");
        verdict.check_read(&[-1, 101], "read 3");
        assert_eq!((verdict.wrong_totals, verdict.negative_balances), (1, 1));
        assert_eq!(verdict.reads_checked, 3);
        assert_eq!(verdict.violations(), 2);
        assert_eq!(verdict.examples[0], "read 2: total 110, expected 100");

        verdict.final_total = Some(99);
        assert_eq!(verdict.violations(), 3);
        verdict.final_total = None;
        assert_eq!(verdict.violations(), 3);
    }

    #[test]
    fn the_report_shows_each_kind_that_ran_and_the_verdict() {
        let mut transfer = KindStats::new();
        transfer.record_ok(ms(3), 2);
        transfer.record_error(ErrorClass::Indeterminate);
        let mut stats = BTreeMap::new();
        stats.insert(OpKind::Transfer, transfer);
        stats.insert(OpKind::ReadStale, KindStats::new());
        let report = Report {
            seed: 7,
            clients: 4,
            elapsed: Duration::from_secs(1),
            stats,
            verdict: Verdict {
                initial_total: 10,
                accounts: 2,
                reads_checked: 2,
                final_total: Some(10),
                ..Verdict::default()
            },
        };
        let text = report.render();
        assert!(text.contains("transfer"), "{text}");
        assert!(
            !text.contains("read-stale"),
            "kinds that never ran are left out: {text}"
        );
        assert!(text.contains("seed 7"), "{text}");
        assert!(text.contains("ended indeterminate: 1"), "{text}");
        assert!(text.contains("verdict: OK"), "{text}");
        assert_eq!(report.transfers_indeterminate(), 1);
    }
}
