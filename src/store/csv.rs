//! The viewing log as CSV for a spreadsheet: RFC 4180 (comma-separated, CRLF line
//! ends, fields with a comma, quote or line break quoted, quotes doubled), with the
//! header `family,name,role,stream,start,end,address,family_name,kind,until,resumed_by`
//! (`kind` is `watch` or `pause`; the last two are a pause's). A clustered
//! node's log adds a last column, `node`: the relay the viewer watched on.
//!
//! Times are ISO 8601 in UTC (`2026-11-22T08:30:05Z`), which spreadsheets read as
//! dates, rather than UNIX seconds; `end` is empty while the viewer still watches.
//! A field that a spreadsheet would run as a formula (starting with `=`, `+`, `-`,
//! `@`, a tab or a carriage return; a parent chooses their own chat name) gets a
//! leading `'`, so the director's spreadsheet shows it as text.

use std::fmt::Write;

use super::ViewRecord;

const HEADER: &str =
    "family,name,role,stream,start,end,address,family_name,kind,until,resumed_by\r\n";

pub fn audit_csv(records: &[ViewRecord]) -> String {
    let mut out = String::with_capacity(HEADER.len() + records.len() * 96);
    let clustered = records.iter().any(|r| r.node.is_some());
    match clustered {
        false => out.push_str(HEADER),
        true => {
            out.push_str(HEADER.trim_end());
            out.push_str(",node\r\n");
        }
    }
    for r in records {
        let fields = [
            field(r.family.as_deref().unwrap_or("")),
            field(r.name.as_deref().unwrap_or("")),
            field(&r.role),
            field(&r.stream),
            iso_utc(r.start),
            r.end.map(iso_utc).unwrap_or_default(),
            field(&r.address),
            field(r.family_name.as_deref().unwrap_or("")),
            field(&r.kind),
            r.until.map(iso_utc).unwrap_or_default(),
            field(r.resumed_by.as_deref().unwrap_or("")),
        ];
        out.push_str(&fields.join(","));
        if clustered {
            out.push(',');
            out.push_str(&field(r.node.as_deref().unwrap_or("")));
        }
        out.push_str("\r\n");
    }
    out
}

/// One text field, made safe for a spreadsheet and quoted when needed.
fn field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// UNIX seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar, UTC).
pub fn iso_utc(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let secs = unix_s.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil: eras of 400 years from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = String::with_capacity(20);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ViewId;

    #[test]
    fn times_are_iso_8601_utc() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(1_795_854_605), "2026-11-28T08:30:05Z");
        assert_eq!(iso_utc(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn fields_are_quoted_per_rfc_4180_and_formulas_defused() {
        let record = ViewRecord {
            id: ViewId(1),
            family: Some("fk3x9mq2hw7".into()),
            name: Some("Pérez, \"Ana\"".into()),
            role: "viewer".into(),
            stream: "sala-1".into(),
            start: 1_795_854_605,
            end: None,
            address: "192.0.2.7".into(),
            family_name: Some("@Familia".into()),
            kind: "watch".into(),
            until: None,
            resumed_by: None,
            node: None,
        };
        let formula = ViewRecord {
            name: Some("=HYPERLINK(\"http://x\")".into()),
            family: None,
            family_name: None,
            end: Some(1_795_854_665),
            ..record.clone()
        };
        let pause = ViewRecord {
            name: Some("Ana".into()),
            role: "staff".into(),
            family: None,
            family_name: None,
            end: Some(1_795_854_665),
            kind: "pause".into(),
            until: Some(1_795_855_205),
            resumed_by: Some("Luis".into()),
            ..record.clone()
        };
        assert_eq!(
            audit_csv(&[record, formula, pause]),
            "family,name,role,stream,start,end,address,family_name,kind,until,resumed_by\r\n\
             fk3x9mq2hw7,\"Pérez, \"\"Ana\"\"\",viewer,sala-1,2026-11-28T08:30:05Z,,192.0.2.7,'@Familia,watch,,\r\n\
             ,\"'=HYPERLINK(\"\"http://x\"\")\",viewer,sala-1,2026-11-28T08:30:05Z,2026-11-28T08:31:05Z,192.0.2.7,,watch,,\r\n\
             ,Ana,staff,sala-1,2026-11-28T08:30:05Z,2026-11-28T08:31:05Z,192.0.2.7,,pause,2026-11-28T08:40:05Z,Luis\r\n"
        );
    }

    #[test]
    fn a_clustered_log_names_each_rows_node_in_a_last_column() {
        let row = |node: &str| ViewRecord {
            id: ViewId(1),
            family: None,
            name: Some("Ana".into()),
            role: "staff".into(),
            stream: "camera".into(),
            start: 1_795_854_605,
            end: None,
            address: "192.0.2.7".into(),
            family_name: None,
            kind: "watch".into(),
            until: None,
            resumed_by: None,
            node: Some(node.into()),
        };
        let csv = audit_csv(&[row("relay-1"), row("relay-2")]);
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].ends_with(",resumed_by,node"), "{}", lines[0]);
        assert!(lines[1].ends_with(",,relay-1"), "{}", lines[1]);
        assert!(lines[2].ends_with(",,relay-2"), "{}", lines[2]);
    }
}
