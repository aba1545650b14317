//! The example EnergyAgent: reads a (Tuya) smart meter and analyses usage.
//!
//! Tools: `get_usage_data`, `optimize_consumption`, `alert_threshold`; scopes `iot:read`,
//! `iot:optimize`. The meter is simulated: a day's hourly readings are a deterministic
//! household load curve derived from the device id and the date.
//!
//! Its schedule (`0 */6 * * *`, every six hours, UTC) starts its first task, `scheduled_report`,
//! with `{"schedule", "instant", "missed"}` as input: the report of the instant's day for the
//! meter of the installation's settings (see `docs/writing-agents.md`, "Triggers").
//!
//! Run it with `cargo run --example energy_agent`: an embedded platform installs it for a
//! household, submits a `daily_report` and follows its events, then fires the schedule at a
//! given instant (a fake clock) and prints the report it starts.

use capecontrol::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Connects to a Tuya smart meter, analyses hourly usage, suggests cheaper times for
/// flexible loads and raises alerts above a threshold.
#[derive(Debug, Agent, Default)]
#[agent(
    name = "EnergyAgent",
    version = "0.9.0",
    category = "domain-specific",
    placement = "dashboard",
    scopes("iot:read", "iot:optimize"),
    data_access("system_metrics"),
    timeout = 45,
    retries = 5,
    memory_limit = "128MB",
    cpu_limit = "0.25",
    concurrent_tasks = 10,
    triggers(schedules("0 */6 * * *"), webhooks("/api/agents/{id}/webhook")),
    ui(icon = "⚡", color = "#F59E0B", description_short = "Smart-meter usage and savings", settings = MeterSettings)
)]
pub struct EnergyAgent;

/// The installation's settings: how to reach the meter.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MeterSettings {
    /// The Tuya cloud API key.
    #[schemars(extend("secret" = true))]
    pub api_key: String,
    /// The meter the scheduled reports read.
    #[serde(default = "default_device")]
    pub device_id: String,
    /// Alert when an hour uses more than this many kWh.
    #[serde(default = "default_threshold")]
    pub threshold_kwh: f64,
}

fn default_device() -> String {
    "meter-1".into()
}

/// What a schedule fire hands the agent's first task.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ScheduledRun {
    /// The cron expression that fired.
    pub schedule: String,
    /// The instant, RFC 3339 UTC.
    pub instant: String,
    /// Earlier instants of a missed window this fire stands for.
    #[serde(default)]
    pub missed: u32,
}

fn default_threshold() -> f64 {
    0.8
}

/// Which meter and which day.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UsageRequest {
    /// The meter's device id.
    pub device_id: String,
    /// The day, `YYYY-MM-DD`.
    pub date: String,
}

/// A day of hourly readings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    /// The meter's device id.
    pub device_id: String,
    /// The day, `YYYY-MM-DD`.
    pub date: String,
    /// kWh used in each hour, 0 to 23.
    pub hourly_kwh: Vec<f64>,
    /// kWh used in the day.
    pub total_kwh: f64,
}

/// Input of `optimize_consumption`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OptimizeRequest {
    /// The meter's device id.
    pub device_id: String,
    /// The day, `YYYY-MM-DD`.
    pub date: String,
    /// Price per kWh at peak hours (17:00–20:59), in cents.
    pub peak_price_cents: f64,
    /// Price per kWh at other hours, in cents.
    pub off_peak_price_cents: f64,
    /// Share of peak usage that can move to other hours (0 to 1), e.g. a dishwasher.
    #[serde(default = "default_flexible")]
    pub flexible_share: f64,
}

fn default_flexible() -> f64 {
    0.3
}

/// Savings from moving flexible load off the peak.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Optimization {
    /// kWh moved out of peak hours.
    pub shifted_kwh: f64,
    /// The hours the load moves to (the cheapest, least loaded hours).
    pub target_hours: Vec<u8>,
    /// Cost of the day as metered, in cents.
    pub cost_cents: f64,
    /// Cost after the shift, in cents.
    pub optimized_cost_cents: f64,
    /// What to tell the user.
    pub advice: String,
}

/// Input of `alert_threshold`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ThresholdRequest {
    /// The meter's device id.
    pub device_id: String,
    /// The day, `YYYY-MM-DD`.
    pub date: String,
    /// The limit in kWh per hour; the installation's setting when absent.
    #[serde(default)]
    pub threshold_kwh: Option<f64>,
}

/// Hours over the threshold.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Alerts {
    /// The threshold used, kWh per hour.
    pub threshold_kwh: f64,
    /// One alert per hour over it.
    pub alerts: Vec<Alert>,
}

/// One hour over the threshold.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Alert {
    /// The hour, 0 to 23.
    pub hour: u8,
    /// kWh used in it.
    pub kwh: f64,
}

/// A day's report: usage, savings and alerts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DailyReport {
    /// kWh used in the day.
    pub total_kwh: f64,
    /// The savings suggestion.
    pub optimization: Optimization,
    /// Hours over the threshold.
    pub alerts: Alerts,
}

const PEAK: std::ops::RangeInclusive<usize> = 17..=20;

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The simulated meter: a household curve (night base load, a morning bump, an evening peak)
/// with noise seeded by the device and the date.
fn read_meter(req: &UsageRequest) -> Result<Usage, Error> {
    let valid_date = req.date.len() == 10
        && req.date.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !valid_date {
        return Err(Error::invalid_field(
            "/date",
            "expected a day like 2026-07-14",
        ));
    }
    if req.device_id.trim().is_empty() {
        return Err(Error::invalid_field("/device_id", "must not be blank"));
    }
    let mut seed = req
        .device_id
        .bytes()
        .chain(req.date.bytes())
        .fold(1469598103934665603u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(1099511628211)
        });
    let hourly_kwh: Vec<f64> = (0..24)
        .map(|h: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let noise = (seed >> 40) as f64 / (1u64 << 24) as f64 * 0.1;
            let base = match h {
                0..=5 => 0.18,
                6..=8 => 0.55,
                9..=16 => 0.3,
                17..=20 => 0.95,
                _ => 0.4,
            };
            round3(base + noise)
        })
        .collect();
    Ok(Usage {
        device_id: req.device_id.clone(),
        date: req.date.clone(),
        total_kwh: round3(hourly_kwh.iter().sum()),
        hourly_kwh,
    })
}

#[agent_impl]
impl EnergyAgent {
    /// The six-hourly report (started by the schedule): the daily report of the instant's day
    /// for the meter in the installation's settings.
    #[task(timeout = 40)]
    pub async fn scheduled_report(
        &self,
        cx: &TaskContext,
        run: ScheduledRun,
    ) -> Result<DailyReport, Error> {
        let device_id = cx.settings()["device_id"]
            .as_str()
            .map_or_else(default_device, str::to_owned);
        let date: String = run.instant.chars().take(10).collect();
        self.daily_report(cx, UsageRequest { device_id, date })
            .await
    }

    /// Analyse a day: read the meter, suggest savings, check the alert threshold.
    #[task(timeout = 40)]
    pub async fn daily_report(
        &self,
        cx: &TaskContext,
        req: UsageRequest,
    ) -> Result<DailyReport, Error> {
        let tool = cx.tool();
        let usage = cx
            .step("read_meter", self.get_usage_data(&tool, req.clone()))
            .await?;
        let optimize = OptimizeRequest {
            device_id: req.device_id.clone(),
            date: req.date.clone(),
            peak_price_cents: 38.0,
            off_peak_price_cents: 21.0,
            flexible_share: default_flexible(),
        };
        let optimization = cx
            .step("optimize", self.optimize_consumption(&tool, optimize))
            .await?;
        let threshold = ThresholdRequest {
            device_id: req.device_id,
            date: req.date,
            threshold_kwh: None,
        };
        let alerts = cx
            .step("alerts", self.alert_threshold(&tool, threshold))
            .await?;
        Ok(DailyReport {
            total_kwh: usage.total_kwh,
            optimization,
            alerts,
        })
    }

    /// Read a day of hourly usage from the smart meter.
    #[tool(scope = "iot:read")]
    pub async fn get_usage_data(
        &self,
        _cx: &ToolContext,
        req: UsageRequest,
    ) -> Result<Usage, Error> {
        read_meter(&req)
    }

    /// Suggest moving flexible load out of the evening peak, with the money it saves.
    #[tool(scope = "iot:optimize")]
    pub async fn optimize_consumption(
        &self,
        _cx: &ToolContext,
        req: OptimizeRequest,
    ) -> Result<Optimization, Error> {
        if !(0.0..=1.0).contains(&req.flexible_share) {
            return Err(Error::invalid_field(
                "/flexible_share",
                "must be between 0 and 1",
            ));
        }
        let usage = read_meter(&UsageRequest {
            device_id: req.device_id,
            date: req.date,
        })?;
        let price = |h: usize| {
            if PEAK.contains(&h) {
                req.peak_price_cents
            } else {
                req.off_peak_price_cents
            }
        };
        let cost: f64 = usage
            .hourly_kwh
            .iter()
            .enumerate()
            .map(|(h, k)| k * price(h))
            .sum();
        let peak_kwh: f64 = usage.hourly_kwh[PEAK].iter().sum();
        let shifted = peak_kwh * req.flexible_share;
        let mut quiet: Vec<usize> = (0..24).filter(|h| !PEAK.contains(h)).collect();
        quiet.sort_by(|a, b| usage.hourly_kwh[*a].total_cmp(&usage.hourly_kwh[*b]));
        let mut target_hours: Vec<u8> = quiet.into_iter().take(3).map(|h| h as u8).collect();
        target_hours.sort_unstable();
        let saved = shifted * (req.peak_price_cents - req.off_peak_price_cents);
        Ok(Optimization {
            shifted_kwh: round3(shifted),
            advice: format!(
                "Run flexible appliances at {} instead of 17:00-20:59 to save about {:.0} cents a day.",
                target_hours
                    .iter()
                    .map(|h| format!("{h:02}:00"))
                    .collect::<Vec<_>>()
                    .join(", "),
                saved.max(0.0)
            ),
            target_hours,
            cost_cents: round3(cost),
            optimized_cost_cents: round3(cost - saved.max(0.0)),
        })
    }

    /// List the hours of a day whose usage is above a threshold.
    #[tool(scope = "iot:read")]
    pub async fn alert_threshold(
        &self,
        cx: &ToolContext,
        req: ThresholdRequest,
    ) -> Result<Alerts, Error> {
        let threshold = match req.threshold_kwh {
            Some(t) => t,
            None => cx
                .settings()
                .get("threshold_kwh")
                .and_then(|v| v.as_f64())
                .unwrap_or(default_threshold()),
        };
        if threshold <= 0.0 {
            return Err(Error::invalid_field(
                "/threshold_kwh",
                "must be greater than 0",
            ));
        }
        let usage = read_meter(&UsageRequest {
            device_id: req.device_id,
            date: req.date,
        })?;
        let alerts = usage
            .hourly_kwh
            .iter()
            .enumerate()
            .filter(|(_, k)| **k > threshold)
            .map(|(h, k)| Alert {
                hour: h as u8,
                kwh: *k,
            })
            .collect();
        Ok(Alerts {
            threshold_kwh: threshold,
            alerts,
        })
    }
}

/// What the example did: the submitted report and the one the schedule started.
#[derive(Debug)]
pub struct Outcome {
    /// The `daily_report` task submitted for 2026-07-15.
    pub submitted: capecontrol::store::TaskRecord,
    /// The `scheduled_report` task of the instant 2026-07-16T06:00:00Z.
    pub scheduled: capecontrol::store::TaskRecord,
    /// The names of the submitted task's events, in order.
    pub events: Vec<&'static str>,
}

/// Runs the agent through an embedded platform: install, submit, watch; then a schedule fire.
pub async fn run() -> Result<Outcome, Box<dyn std::error::Error>> {
    use capecontrol::registry::InstallRequest;
    use tokio_stream::StreamExt;

    // The scheduler's tick is off: the schedule is fired below at a chosen instant.
    let mut config = capecontrol::PlatformConfig::default();
    config.triggers.schedule_tick = None;
    let platform = Platform::builder()
        .agent(EnergyAgent)
        .config(config)
        .build()
        .await?;
    let household = Principal::new("household-42").with_roles(["user"]);
    platform
        .registry()
        .install(
            &household,
            InstallRequest::latest("energyagent")
                .grant(["iot:read", "iot:optimize"])
                .settings(json!({"api_key": "not-a-real-key", "threshold_kwh": 0.98,
                                "device_id": "bf3a9c-meter"})),
        )
        .await?;

    let input = json!({"device_id": "bf3a9c-meter", "date": "2026-07-15"});
    let id = platform
        .submit(TaskRequest::new(
            "energyagent",
            "daily_report",
            input,
            household.clone(),
        ))
        .await?;
    let mut events = Vec::new();
    let mut stream = platform.watch(id, &household).await?;
    while let Some(event) = stream.next().await {
        let event = event?;
        println!("  #{:<2} {}", event.seq, event.kind.name());
        events.push(event.kind.name());
    }
    let submitted = platform.get(id, &household).await?;
    println!(
        "daily_report -> {}",
        serde_json::to_string(&submitted.output)?
    );

    // The schedule, at 06:00 UTC on the next day (the installation must predate the instant:
    // instants before an install never fire, so the clock here is "now", moved forward).
    let installed = platform
        .store()
        .get_installation("energyagent", "household-42")
        .await?;
    let next = capecontrol_rules_next(installed.updated_at);
    let fired = platform.run_schedules(next).await?;
    let task = fired
        .first()
        .ok_or("the schedule started no task")?
        .task
        .clone()?;
    let scheduled = platform.wait(task, &household).await?;
    println!(
        "scheduled_report at {next} -> {}",
        serde_json::to_string(&scheduled.output)?
    );
    platform.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(Outcome {
        submitted,
        scheduled,
        events,
    })
}

/// The first six-hour instant after `t`.
fn capecontrol_rules_next(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{Duration, DurationRound};
    t.duration_trunc(Duration::hours(6)).unwrap_or(t) + Duration::hours(6)
}

/// Prints the manifest, then runs the agent through an embedded platform.
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = serde_json::to_value(EnergyAgent.manifest())?;
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    capecontrol::validate::check_manifest(&manifest)?;
    println!("manifest: valid\n");
    let outcome = run().await?;
    println!(
        "submitted: {}, scheduled: {}",
        outcome.submitted.status, outcome.scheduled.status
    );
    Ok(())
}
