//! Fault injection for tests. A build with the `test-hooks` feature (the separate test addon that
//! `npm run build:test-native` makes) arms the points named in the environment variable [`FAULTS_ENV`], a
//! comma-separated list such as `offload-write,panic-reader`, read once per process. Without the feature
//! [`armed`] is a constant `false` that the compiler folds away: release builds read no environment and carry no
//! test path.
//!
//! Points in use: `offload-write` (the first super-packet write of each offload queue fails with a synthetic
//! `EINVAL`, to exercise the fallback; checked when the queue is created).

/// The environment variable that lists the armed points (read only with the `test-hooks` feature).
pub const FAULTS_ENV: &str = "TUNKIT_TEST_FAULTS";

/// Whether the fault injection point `point` is armed: with the `test-hooks` feature, whether [`FAULTS_ENV`]
/// lists it.
#[cfg(feature = "test-hooks")]
pub fn armed(point: &str) -> bool {
  use std::sync::OnceLock;
  static POINTS: OnceLock<Vec<String>> = OnceLock::new();
  POINTS
    .get_or_init(|| parse(&std::env::var(FAULTS_ENV).unwrap_or_default()))
    .iter()
    .any(|p| p == point)
}

/// Whether the fault injection point `point` is armed: never, in a build without the `test-hooks` feature.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub const fn armed(_point: &str) -> bool {
  false
}

/// The points of a [`FAULTS_ENV`] value: comma-separated, blanks around names ignored, empty names dropped.
#[cfg_attr(not(any(test, feature = "test-hooks")), allow(dead_code))]
fn parse(list: &str) -> Vec<String> {
  list
    .split(',')
    .map(str::trim)
    .filter(|p| !p.is_empty())
    .map(String::from)
    .collect()
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn fault_lists_parse_into_exact_names() {
    assert_eq!(parse(""), Vec::<String>::new());
    assert_eq!(parse("offload-write"), ["offload-write"]);
    assert_eq!(
      parse(" offload-write , panic-reader,,"),
      ["offload-write", "panic-reader"]
    );
  }

  #[cfg(not(feature = "test-hooks"))]
  #[test]
  fn without_the_feature_nothing_is_armed() {
    // The variable may be set by whoever runs the tests; a build without the feature must ignore it.
    assert!(!armed("offload-write"));
    assert!(!armed(""));
  }
}
