//! `[rollout]`: how a changed spec replaces the instances.

use super::MAX_INSTANCES;
use serde::{Deserialize, Serialize};

/// How many instances a rollout keeps healthy: a fraction of `instances` or a count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MinHealthy {
    Count(u32),
    Fraction(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    #[serde(default = "default_min_healthy")]
    pub min_healthy: MinHealthy,
    #[serde(default = "default_max_surge")]
    pub max_surge: u32,
    /// New-version instances that fail (health checks, or ending by themselves) before the
    /// service is rolled back to its previous spec.
    #[serde(default = "default_rollback_after")]
    pub rollback_after: u32,
}

fn default_min_healthy() -> MinHealthy {
    MinHealthy::Fraction(1.0)
}
fn default_max_surge() -> u32 {
    1
}
fn default_rollback_after() -> u32 {
    2
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            min_healthy: default_min_healthy(),
            max_surge: default_max_surge(),
            rollback_after: default_rollback_after(),
        }
    }
}

impl Rollout {
    /// How many of `instances` stay healthy while a rollout replaces them.
    pub fn min_healthy_count(&self, instances: u32) -> u32 {
        match self.min_healthy {
            MinHealthy::Count(n) => n.min(instances),
            MinHealthy::Fraction(f) => ((f * f64::from(instances)).ceil() as u32).min(instances),
        }
    }

    /// The rollout's part of [`super::Spec`]'s check, for a service of `instances`.
    pub(super) fn check(&self, instances: u32) -> Result<(), (&'static str, String)> {
        if let MinHealthy::Fraction(f) = self.min_healthy {
            if !(f.is_finite() && (0.0..=1.0).contains(&f)) {
                return Err((
                    "rollout.min_healthy",
                    "a fraction between 0.0 and 1.0, or a whole count".into(),
                ));
            }
        }
        if self.max_surge > MAX_INSTANCES {
            return Err(("rollout.max_surge", format!("at most {MAX_INSTANCES}")));
        }
        if self.max_surge == 0 && self.min_healthy_count(instances) >= instances && instances > 0 {
            return Err((
                "rollout.max_surge",
                "with no surge, min_healthy must leave room to replace an instance (e.g. max_surge = 1 or min_healthy = 0.5)".into(),
            ));
        }
        if self.rollback_after == 0 {
            return Err(("rollout.rollback_after", "must be at least 1".into()));
        }
        Ok(())
    }
}
