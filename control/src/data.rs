//! The YAML data file: services, metrics, plans and applications (format in control/README.md).
//!
//! Two types per boundary: `Raw*` is what serde reads, [`Data`] is the validated model whose
//! only constructor is [`Data::from_yaml`]. Every problem is reported with its place
//! (`services[0].applications[1].plan: unknown plan "gold"`), all at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;

use crate::periods::Period;

/// How a service identifies applications (3scale's `backend_version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendVersion {
    /// API key: `user_key`.
    UserKey,
    /// App id + app key(s).
    AppId,
    /// OAuth / OIDC: `app_id` is the client id; `app_key` is checked only when sent.
    Oauth,
}

/// A validated data file.
#[derive(Debug)]
pub struct Data {
    pub(crate) services: Vec<Service>,
}

#[derive(Debug)]
pub(crate) struct Service {
    pub id: String,
    pub service_token: Option<String>,
    pub provider_key: Option<String>,
    pub backend_version: BackendVersion,
    pub active: bool,
    pub metrics: Vec<Metric>,
    pub metric_index: HashMap<String, usize>,
    pub plans: Vec<Plan>,
    pub apps: Vec<App>,
    pub app_index: HashMap<String, usize>,
}

#[derive(Debug)]
pub(crate) struct Metric {
    pub name: String,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub name: String,
    /// In metric order, then eternity → minute (apisonator's `ALL_DESC`).
    pub limits: Vec<Limit>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    pub metric: usize,
    pub period: Period,
    pub max: u64,
}

#[derive(Debug)]
pub(crate) struct App {
    /// The `app_id`, or the `user_key` for API-key services.
    pub id: String,
    pub keys: Vec<String>,
    pub plan: usize,
    pub active: bool,
    pub redirect_url: Option<String>,
}

impl Service {
    /// The metric and all its ancestors, the metric first.
    pub fn with_ancestors(&self, metric: usize) -> Vec<usize> {
        let mut out = vec![metric];
        let mut cur = self.metrics.get(metric).and_then(|m| m.parent);
        // The data is validated acyclic; the bound is belt and braces.
        while let Some(p) = cur {
            if out.len() > self.metrics.len() {
                break;
            }
            out.push(p);
            cur = self.metrics.get(p).and_then(|m| m.parent);
        }
        out
    }

    pub fn metric_name(&self, metric: usize) -> &str {
        self.metrics.get(metric).map_or("", |m| m.name.as_str())
    }
}

/// Everything wrong with a data file, one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub problems: Vec<String>,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for DataError {}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawId {
    Text(String),
    Number(u64),
}

impl RawId {
    fn text(self) -> String {
        match self {
            RawId::Text(s) => s,
            RawId::Number(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    services: Vec<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    id: RawId,
    #[serde(default)]
    #[allow(dead_code)] // documentation for people reading the file
    name: Option<String>,
    #[serde(default)]
    service_token: Option<String>,
    #[serde(default)]
    provider_key: Option<String>,
    #[serde(default)]
    backend_version: Option<RawId>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    metrics: Vec<RawMetric>,
    #[serde(default)]
    plans: Vec<RawPlan>,
    #[serde(default)]
    applications: Vec<RawApp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    name: String,
    #[serde(default)]
    parent: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: String,
    #[serde(default)]
    limits: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    #[serde(default)]
    app_id: Option<RawId>,
    #[serde(default)]
    user_key: Option<String>,
    #[serde(default)]
    app_keys: Vec<String>,
    plan: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    redirect_url: Option<String>,
}

fn parse_state(state: Option<&str>, at: &str, problems: &mut Vec<String>) -> bool {
    match state {
        None | Some("active") => true,
        Some("suspended") => false,
        Some(other) => {
            problems.push(format!(
                "{at}.state: unknown state {other:?} (expected \"active\" or \"suspended\")"
            ));
            true
        }
    }
}

impl Data {
    /// Parses and validates a data file.
    pub fn from_yaml(yaml: &str) -> Result<Data, DataError> {
        let raw: RawData = serde_saphyr::from_str(yaml).map_err(|e| DataError {
            problems: vec![format!("invalid YAML: {e}")],
        })?;
        let mut problems = Vec::new();
        let mut services = Vec::new();
        let mut ids = HashSet::new();
        if raw.services.is_empty() {
            problems.push("services: at least one service is required".to_owned());
        }
        for (si, rs) in raw.services.into_iter().enumerate() {
            let at = format!("services[{si}]");
            if let Some(s) = compile_service(rs, &at, &mut problems) {
                if !ids.insert(s.id.clone()) {
                    problems.push(format!("{at}.id: duplicate service id {:?}", s.id));
                }
                services.push(s);
            }
        }
        // A provider key names one account: its services must not also appear elsewhere with a
        // different token semantics; nothing else to check. Service tokens may repeat (3scale
        // pairs them with the service id).
        if problems.is_empty() {
            Ok(Data { services })
        } else {
            Err(DataError { problems })
        }
    }

    /// Service ids, in file order.
    pub fn service_ids(&self) -> impl Iterator<Item = &str> {
        self.services.iter().map(|s| s.id.as_str())
    }
}

fn compile_service(rs: RawService, at: &str, problems: &mut Vec<String>) -> Option<Service> {
    let id = rs.id.text().trim().to_owned();
    if id.is_empty() {
        problems.push(format!("{at}.id: must not be empty"));
    }
    let nonblank = |v: Option<String>| v.filter(|s| !s.is_empty());
    let service_token = nonblank(rs.service_token);
    let provider_key = nonblank(rs.provider_key);
    if service_token.is_none() && provider_key.is_none() {
        problems.push(format!(
            "{at}: needs a service_token or a provider_key (or both)"
        ));
    }
    let backend_version = match rs.backend_version.map(RawId::text).as_deref() {
        None | Some("2") => BackendVersion::AppId,
        Some("1") => BackendVersion::UserKey,
        Some("oauth") | Some("oidc") => BackendVersion::Oauth,
        Some(other) => {
            problems.push(format!(
                "{at}.backend_version: unknown value {other:?} (expected \"1\", \"2\" or \"oauth\")"
            ));
            BackendVersion::AppId
        }
    };
    let active = parse_state(rs.state.as_deref(), at, problems);

    // Metrics.
    let mut metric_index = HashMap::new();
    for (mi, m) in rs.metrics.iter().enumerate() {
        let name = m.name.trim();
        if name.is_empty() {
            problems.push(format!("{at}.metrics[{mi}].name: must not be empty"));
        } else if metric_index.insert(name.to_owned(), mi).is_some() {
            problems.push(format!(
                "{at}.metrics[{mi}].name: duplicate metric {name:?}"
            ));
        }
    }
    let mut metrics: Vec<Metric> = Vec::new();
    for (mi, m) in rs.metrics.iter().enumerate() {
        let parent = match m.parent.as_deref().map(str::trim) {
            None => None,
            Some(p) => match metric_index.get(p) {
                Some(&pi) if pi == mi => {
                    problems.push(format!(
                        "{at}.metrics[{mi}].parent: a metric cannot be its own parent"
                    ));
                    None
                }
                Some(&pi) => Some(pi),
                None => {
                    problems.push(format!("{at}.metrics[{mi}].parent: unknown metric {p:?}"));
                    None
                }
            },
        };
        metrics.push(Metric {
            name: m.name.trim().to_owned(),
            parent,
            children: Vec::new(),
        });
    }
    // Cycles.
    for mi in 0..metrics.len() {
        let mut seen = HashSet::new();
        let mut cur = Some(mi);
        while let Some(c) = cur {
            if !seen.insert(c) {
                problems.push(format!(
                    "{at}.metrics[{mi}].parent: the parents form a cycle"
                ));
                break;
            }
            cur = metrics.get(c).and_then(|m| m.parent);
        }
    }
    for mi in 0..metrics.len() {
        if let Some(p) = metrics.get(mi).and_then(|m| m.parent) {
            if let Some(pm) = metrics.get_mut(p) {
                pm.children.push(mi);
            }
        }
    }

    // Plans.
    let mut plans = Vec::new();
    let mut plan_index = HashMap::new();
    for (pi, rp) in rs.plans.into_iter().enumerate() {
        let pat = format!("{at}.plans[{pi}]");
        if plan_index.insert(rp.name.clone(), pi).is_some() {
            problems.push(format!("{pat}.name: duplicate plan {:?}", rp.name));
        }
        let mut limits = Vec::new();
        for (metric, periods) in &rp.limits {
            let Some(&m) = metric_index.get(metric.as_str()) else {
                problems.push(format!("{pat}.limits.{metric}: unknown metric {metric:?}"));
                continue;
            };
            for (period, &max) in periods {
                match Period::parse(period) {
                    Some(p) => limits.push(Limit { metric: m, period: p, max }),
                    None => problems.push(format!(
                        "{pat}.limits.{metric}.{period}: unknown period {period:?} (expected minute, hour, day, week, month, year or eternity)"
                    )),
                }
            }
        }
        limits.sort_by_key(|l| (l.metric, std::cmp::Reverse(l.period)));
        plans.push(Plan {
            name: rp.name,
            limits,
        });
    }

    // Applications.
    let mut apps = Vec::new();
    let mut app_index = HashMap::new();
    for (ai, ra) in rs.applications.into_iter().enumerate() {
        let aat = format!("{at}.applications[{ai}]");
        let app_id = ra.app_id.map(RawId::text).map(|s| s.trim().to_owned());
        let user_key = ra.user_key.map(|s| s.trim().to_owned());
        let id = match (backend_version, app_id, user_key) {
            (_, Some(_), Some(_)) => {
                problems.push(format!("{aat}: has both app_id and user_key; give one"));
                continue;
            }
            (BackendVersion::UserKey, Some(_), None) => {
                problems.push(format!(
                    "{aat}.app_id: service {id:?} uses backend_version \"1\" (user_key); give a user_key"
                ));
                continue;
            }
            (BackendVersion::AppId | BackendVersion::Oauth, None, Some(_)) => {
                problems.push(format!(
                    "{aat}.user_key: service {id:?} identifies applications by app_id (backend_version \"2\" or \"oauth\"); give an app_id"
                ));
                continue;
            }
            (_, None, None) => {
                problems.push(format!("{aat}: needs an app_id or a user_key"));
                continue;
            }
            (_, Some(v), None) | (_, None, Some(v)) => v,
        };
        if id.is_empty() {
            problems.push(format!("{aat}: the app_id / user_key must not be empty"));
            continue;
        }
        if backend_version == BackendVersion::UserKey && !ra.app_keys.is_empty() {
            problems.push(format!(
                "{aat}.app_keys: user_key applications have no keys"
            ));
        }
        for (ki, k) in ra.app_keys.iter().enumerate() {
            if k.trim().is_empty() {
                problems.push(format!("{aat}.app_keys[{ki}]: must not be empty"));
            }
        }
        let plan = match plan_index.get(&ra.plan) {
            Some(&p) => p,
            None => {
                problems.push(format!("{aat}.plan: unknown plan {:?}", ra.plan));
                continue;
            }
        };
        let active = parse_state(ra.state.as_deref(), &aat, problems);
        if app_index.insert(id.clone(), apps.len()).is_some() {
            problems.push(format!("{aat}: duplicate application {id:?}"));
            continue;
        }
        apps.push(App {
            id,
            keys: ra
                .app_keys
                .into_iter()
                .map(|k| k.trim().to_owned())
                .collect(),
            plan,
            active,
            redirect_url: ra.redirect_url.filter(|u| !u.is_empty()),
        });
    }

    Some(Service {
        id,
        service_token,
        provider_key,
        backend_version,
        active,
        metrics,
        metric_index,
        plans,
        apps,
        app_index,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests
    use super::*;

    const OK: &str = r#"
services:
  - id: 42
    service_token: tok
    metrics:
      - name: hits
      - name: search
        parent: hits
    plans:
      - name: basic
        limits:
          hits: {minute: 3, eternity: 10}
          search: {day: 0}
    applications:
      - app_id: a1
        app_keys: [k1]
        plan: basic
"#;

    #[test]
    fn loads() {
        let d = Data::from_yaml(OK).unwrap();
        let s = &d.services[0];
        assert_eq!(s.id, "42");
        assert_eq!(s.metrics[1].parent, Some(0));
        assert_eq!(s.metrics[0].children, vec![1]);
        let periods: Vec<_> = s.plans[0]
            .limits
            .iter()
            .map(|l| (l.metric, l.period))
            .collect();
        assert_eq!(
            periods,
            vec![(0, Period::Eternity), (0, Period::Minute), (1, Period::Day)]
        );
        assert_eq!(s.with_ancestors(1), vec![1, 0]);
    }

    #[test]
    fn names_the_place() {
        let bad = OK
            .replace("plan: basic", "plan: gold")
            .replace("search: {day: 0}", "nope: {day: 0}");
        let e = Data::from_yaml(&bad).unwrap_err();
        assert!(
            e.problems
                .contains(&"services[0].applications[0].plan: unknown plan \"gold\"".to_owned()),
            "{e}"
        );
        assert!(
            e.problems
                .contains(&"services[0].plans[0].limits.nope: unknown metric \"nope\"".to_owned()),
            "{e}"
        );
    }

    #[test]
    fn rejects_cycles_and_bad_periods() {
        let bad = OK
            .replace(
                "      - name: hits\n",
                "      - name: hits\n        parent: search\n",
            )
            .replace("minute: 3", "second: 3");
        let e = Data::from_yaml(&bad).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
        assert!(e.to_string().contains("unknown period \"second\""), "{e}");
    }

    #[test]
    fn rejects_unknown_fields_and_garbage() {
        assert!(Data::from_yaml("services: [{id: 1, service_token: t, colour: red}]").is_err());
        assert!(Data::from_yaml(": : :").is_err());
        assert!(Data::from_yaml("services: []").is_err());
    }
}
