//! Answers as apisonator writes them: no whitespace between elements, `max_value` before
//! `current_value`, eternity without dates, the plan and redirect URL escaped, the reason, metric
//! names and key ids not escaped (apisonator does not; callers must decide on the status code).

use crate::periods::{format_time, Period};

pub const CONTENT_TYPE: &str = "application/vnd.3scale-v2.0+xml";
const HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// One `<usage_report>`.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    pub metric: &'a str,
    pub period: Period,
    pub start: i64,
    pub end: Option<i64>,
    pub max: u64,
    pub current: u64,
}

/// The `<application>` section of the `oauth_*` endpoints.
#[derive(Debug, Clone)]
pub struct Application<'a> {
    pub id: &'a str,
    pub key: &'a str,
    /// `redirect_url` or `redirect_uri`, as the request named it.
    pub redirect_element: &'a str,
    pub redirect_url: &'a str,
}

#[derive(Debug, Clone, Default)]
pub struct Status<'a> {
    pub authorized: bool,
    pub reason: Option<&'a str>,
    pub application: Option<Application<'a>>,
    pub plan: &'a str,
    pub reports: Vec<Report<'a>>,
    /// `list_app_keys=1`: (app id, service id, keys).
    pub app_keys: Option<(&'a str, &'a str, &'a [String])>,
    /// `hierarchy=1`: (metric, its children), one per report.
    pub hierarchy: Option<Vec<(&'a str, Vec<&'a str>)>>,
}

/// Escapes text as Builder (and Ruby's `encode(xml: :text)`) does: `& < >`, not quotes.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

impl Status<'_> {
    pub fn to_xml(&self) -> String {
        let mut x = String::with_capacity(256 + 220 * self.reports.len());
        x.push_str(HEAD);
        x.push_str("<status>");
        if self.authorized {
            x.push_str("<authorized>true</authorized>");
        } else {
            x.push_str("<authorized>false</authorized><reason>");
            x.push_str(self.reason.unwrap_or(""));
            x.push_str("</reason>");
        }
        if let Some(a) = &self.application {
            x.push_str("<application><id>");
            x.push_str(a.id);
            x.push_str("</id><key>");
            x.push_str(a.key);
            x.push_str("</key><");
            x.push_str(a.redirect_element);
            x.push('>');
            x.push_str(&escape_text(a.redirect_url));
            x.push_str("</");
            x.push_str(a.redirect_element);
            x.push_str("></application>");
        }
        x.push_str("<plan>");
        x.push_str(&escape_text(self.plan));
        x.push_str("</plan>");
        if !self.reports.is_empty() {
            x.push_str("<usage_reports>");
            for r in &self.reports {
                x.push_str("<usage_report metric=\"");
                x.push_str(r.metric);
                x.push_str("\" period=\"");
                x.push_str(r.period.name());
                x.push('"');
                if r.current > r.max {
                    x.push_str(" exceeded=\"true\"");
                }
                x.push('>');
                if let Some(end) = r.end {
                    x.push_str("<period_start>");
                    x.push_str(&format_time(r.start));
                    x.push_str("</period_start><period_end>");
                    x.push_str(&format_time(end));
                    x.push_str("</period_end>");
                }
                x.push_str(&format!(
                    "<max_value>{}</max_value><current_value>{}</current_value></usage_report>",
                    r.max, r.current
                ));
            }
            x.push_str("</usage_reports>");
        }
        if let Some((app, svc, keys)) = self.app_keys {
            x.push_str(&format!("<app_keys app=\"{app}\" svc=\"{svc}\">"));
            for k in keys.iter().take(256) {
                x.push_str(&format!("<key id=\"{k}\"/>"));
            }
            x.push_str("</app_keys>");
        }
        if let Some(h) = &self.hierarchy {
            x.push_str("<hierarchy>");
            for (m, children) in h {
                x.push_str(&format!(
                    "<metric name=\"{m}\" children=\"{}\"/>",
                    children.join(" ")
                ));
            }
            x.push_str("</hierarchy>");
        }
        x.push_str("</status>");
        x
    }
}

/// `<error code="CODE">MESSAGE</error>`.
pub fn error(code: &str, message: &str) -> String {
    format!(
        "{HEAD}<error code=\"{code}\">{}</error>",
        escape_text(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::periods::days_from_civil;

    #[test]
    fn matches_apisonator_e2() {
        let day = days_from_civil(2010, 5, 15) * 86_400;
        let month = days_from_civil(2010, 5, 1) * 86_400;
        let s = Status {
            authorized: false,
            reason: Some("usage limits are exceeded"),
            plan: "Basic & <Pro>",
            reports: vec![
                Report {
                    metric: "hits",
                    period: Period::Day,
                    start: day,
                    end: Some(day + 86_400),
                    max: 100,
                    current: 101,
                },
                Report {
                    metric: "hits",
                    period: Period::Month,
                    start: month,
                    end: Some(days_from_civil(2010, 6, 1) * 86_400),
                    max: 10000,
                    current: 150,
                },
                Report {
                    metric: "search",
                    period: Period::Eternity,
                    start: 0,
                    end: None,
                    max: 50,
                    current: 2,
                },
            ],
            ..Status::default()
        };
        assert_eq!(
            s.to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><status><authorized>false</authorized><reason>usage limits are exceeded</reason><plan>Basic &amp; &lt;Pro&gt;</plan><usage_reports><usage_report metric="hits" period="day" exceeded="true"><period_start>2010-05-15 00:00:00 +0000</period_start><period_end>2010-05-16 00:00:00 +0000</period_end><max_value>100</max_value><current_value>101</current_value></usage_report><usage_report metric="hits" period="month"><period_start>2010-05-01 00:00:00 +0000</period_start><period_end>2010-06-01 00:00:00 +0000</period_end><max_value>10000</max_value><current_value>150</current_value></usage_report><usage_report metric="search" period="eternity"><max_value>50</max_value><current_value>2</current_value></usage_report></usage_reports></status>"#
        );
    }

    #[test]
    fn no_reports_no_section_and_errors_escape() {
        let s = Status {
            authorized: true,
            plan: "Default",
            ..Status::default()
        };
        assert_eq!(
            s.to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><status><authorized>true</authorized><plan>Default</plan></status>"#
        );
        assert_eq!(
            error("user_key_invalid", r#"user key "a&b<c>"d"" is invalid"#),
            r#"<?xml version="1.0" encoding="UTF-8"?><error code="user_key_invalid">user key "a&amp;b&lt;c&gt;"d"" is invalid</error>"#
        );
    }
}
