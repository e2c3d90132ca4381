//! The images the containers backend runs: configuration, with the official images as
//! defaults. Where no registry can be reached, `ci/build-images` builds compatible ones from the
//! machine's own Debian mirror and the workspace's binaries, and prints the variables that
//! select them (`eval "$(ci/build-images --print-env)"`).

/// Selects the Postgres image (one container per service; `POSTGRES_USER`, `POSTGRES_PASSWORD`,
/// `POSTGRES_DB` and port 5432 as the official image has them).
pub const POSTGRES_VAR: &str = "HARNESS_IMAGE_POSTGRES";
/// Selects the Kafka image (configured the way `apache/kafka` is, through `KAFKA_*` variables).
pub const KAFKA_VAR: &str = "HARNESS_IMAGE_KAFKA";
/// Selects the Toxiproxy image (its HTTP API on port 8474).
pub const TOXIPROXY_VAR: &str = "HARNESS_IMAGE_TOXIPROXY";
/// Selects the image holding the gateway and the services' binaries.
pub const SERVICES_VAR: &str = "HARNESS_IMAGE_SERVICES";

pub const POSTGRES_DEFAULT: &str = "postgres:16";
pub const KAFKA_DEFAULT: &str = "apache/kafka:3.9.0";
pub const TOXIPROXY_DEFAULT: &str = "ghcr.io/shopify/toxiproxy:2.9.0";
/// The workspace's own: no registry has it, `ci/build-images` builds it.
pub const SERVICES_DEFAULT: &str = "reference-system/services:dev";

/// What to say when an image is missing.
pub const HINT: &str = "build the images with `ci/build-images` and select them with \
    `eval \"$(ci/build-images --print-env)\"`, or set HARNESS_IMAGE_POSTGRES, HARNESS_IMAGE_KAFKA, \
    HARNESS_IMAGE_TOXIPROXY and HARNESS_IMAGE_SERVICES";

/// The four images of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub postgres: String,
    pub kafka: String,
    pub toxiproxy: String,
    pub services: String,
}

impl Images {
    /// From the environment variables, each defaulting to its official image.
    pub fn from_env() -> Self {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let pick = |var: &str, default: &str| {
            get(var)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        Self {
            postgres: pick(POSTGRES_VAR, POSTGRES_DEFAULT),
            kafka: pick(KAFKA_VAR, KAFKA_DEFAULT),
            toxiproxy: pick(TOXIPROXY_VAR, TOXIPROXY_DEFAULT),
            services: pick(SERVICES_VAR, SERVICES_DEFAULT),
        }
    }

    pub fn all(&self) -> [&str; 4] {
        [&self.postgres, &self.kafka, &self.toxiproxy, &self.services]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_images_are_the_defaults_and_a_variable_overrides_one() {
        let defaults = Images::from_lookup(|_| None);
        assert_eq!(defaults.postgres, "postgres:16");
        assert_eq!(defaults.kafka, "apache/kafka:3.9.0");
        assert_eq!(defaults.toxiproxy, "ghcr.io/shopify/toxiproxy:2.9.0");
        let local = Images::from_lookup(|v| {
            (v == KAFKA_VAR).then(|| " reference-system/kafka:embedded ".to_string())
        });
        assert_eq!(local.kafka, "reference-system/kafka:embedded");
        assert_eq!(local.postgres, "postgres:16");
        // An empty value is no value.
        assert_eq!(
            Images::from_lookup(|_| Some(String::new())),
            Images::from_lookup(|_| None)
        );
    }
}
