//! The example EnergyAgent: reads a (Tuya) smart meter and analyses usage.
//!
//! Tools: `get_usage_data`, `optimize_consumption`, `alert_threshold`; scopes `iot:read`,
//! `iot:optimize`. The meter is simulated: a day's hourly readings are a deterministic
//! household load curve derived from the device id and the date.
//!
//! Run it with `cargo run --example energy_agent`.

use std::sync::Arc;

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
    /// Alert when an hour uses more than this many kWh.
    #[serde(default = "default_threshold")]
    pub threshold_kwh: f64,
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

/// Prints the manifest, then calls the tools and the `daily_report` task by name with JSON.
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let agent = EnergyAgent;
    let manifest = serde_json::to_value(agent.manifest())?;
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    capecontrol::validate::check_manifest(&manifest)?;
    println!("manifest: valid\n");

    let journal = Arc::new(MemoryJournal::default());
    let cx = TaskContext::local()
        .principal(Principal::new("household-42"))
        .granted(vec!["iot:*".parse()?])
        .settings(json!({"api_key": "not-a-real-key", "threshold_kwh": 0.98}))
        .build(journal.clone());

    let calls = [
        (
            "get_usage_data",
            json!({"device_id": "bf3a9c-meter", "date": "2026-07-14"}),
        ),
        (
            "optimize_consumption",
            json!({"device_id": "bf3a9c-meter", "date": "2026-07-14",
                   "peak_price_cents": 38.5, "off_peak_price_cents": 21.0}),
        ),
        (
            "alert_threshold",
            json!({"device_id": "bf3a9c-meter", "date": "2026-07-14"}),
        ),
        (
            "alert_threshold",
            json!({"device_id": "bf3a9c-meter", "date": "14/07/2026"}),
        ),
        ("get_usage_data", json!({"device_id": "bf3a9c-meter"})),
    ];
    for (tool, input) in calls {
        match agent.call_tool(tool, input, &cx.tool()).await {
            Ok(out) => println!("{tool} -> {out}"),
            Err(e) => println!("{tool} -> error ({}): {e}", e.category()),
        }
    }

    let report = agent
        .run_task(
            "daily_report",
            json!({"device_id": "bf3a9c-meter", "date": "2026-07-15"}),
            &cx,
        )
        .await?;
    println!("\ndaily_report -> {report}");
    for step in journal.steps() {
        println!("  step {} {} {}", step.step, step.name, step.status);
    }
    Ok(())
}
