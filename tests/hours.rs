//! Opening hours as a director and parents notice them, against a real server:
//! hours from the config file close a room to families (told when it opens, no
//! frames, no snapshot, and the camera stays off for them alone) while staff keep
//! watching; the admin API opens it at once, refuses bad hours naming the field,
//! and what it sets wins over the file, across a restart too. Daylight saving and
//! midnight crossings are checked at the unit level (src/privacy/schedule.rs).

mod common;

use std::time::{Duration, Instant};

use common::*;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::{json, Value};

const INTERVAL_MS: u64 = 100;
const ZONE: &str = "America/Bogota";

/// Today in the room's zone.
fn today() -> Date {
    TimeZone::get(ZONE)
        .unwrap()
        .to_datetime(Timestamp::now())
        .date()
}

/// Hours that are open all week but closed yesterday, today and tomorrow (in the
/// room's zone), so that the room is closed now even if midnight passes during
/// the test, and opens at the start of the day after tomorrow.
fn closed_now() -> (Value, i64) {
    let today = today();
    let days: Vec<String> = (-1..=1)
        .map(|n| (today + jiff::Span::new().days(n)).to_string())
        .collect();
    let opens = TimeZone::get(ZONE)
        .unwrap()
        .to_timestamp((today + jiff::Span::new().days(2)).at(0, 0, 0, 0))
        .unwrap()
        .as_second();
    let hours = json!({
        "timezone": ZONE,
        "open": [{"days": ["mon","tue","wed","thu","fri","sat","sun"], "from": "00:00", "to": "24:00"}],
        "closed_dates": days,
    });
    (hours, opens)
}

/// The same hours as a TOML `[schedule]` table for the main camera.
fn closed_now_toml() -> String {
    let (hours, _) = closed_now();
    let dates: Vec<String> = hours["closed_dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("\"{}\"", d.as_str().unwrap()))
        .collect();
    format!(
        "[schedule]\ntimezone = \"{ZONE}\"\n\
         open = [{{days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"], from = \"00:00\", to = \"24:00\"}}]\n\
         closed_dates = [{}]\n",
        dates.join(", ")
    )
}

/// A secured server with the test pattern every 100 ms, the config file `config`
/// and the state directory `state`.
async fn room(config: &std::path::Path, state: &std::path::Path) -> TestServer {
    start_secured(&[
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--interval-ms",
        &INTERVAL_MS.to_string(),
        "--width",
        "96",
        "--height",
        "64",
    ])
    .await
}

async fn with_code(
    server: &TestServer,
    code: &str,
    method: &str,
    path: &str,
    body: &str,
) -> HttpReply {
    let auth = basic_auth(code);
    http_request(server.http, method, path, &[("Authorization", &auth)], body).await
}

async fn admin(server: &TestServer, method: &str, path: &str, body: &str) -> HttpReply {
    with_code(server, ADMIN_CODE, method, path, body).await
}

async fn viewer(server: &TestServer, code: &str) -> Ws {
    ws_with(server, "/video", &[("Authorization", basic_auth(code))])
        .await
        .unwrap_or_else(|status| panic!("the handshake succeeds, got {status}"))
}

/// Nothing at all reaches `family` while `staff` receives `n` frames.
async fn family_silent_while_staff_watch(family: &mut Ws, staff: &mut Ws, n: usize) {
    for _ in 0..n {
        recv_frame(staff).await;
        if let Some(message) = recv_within(family, Duration::ZERO).await {
            panic!("a family of a closed room received {}", describe(&message));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_its_hours_a_room_holds_families_but_not_staff_and_the_api_opens_it_at_once() {
    let dir = TempDir::new("hours-closed");
    let config = dir.write("kindercam.toml", &closed_now_toml());
    let state = TempDir::new("hours-closed-state");
    let server = room(&config, state.path()).await;
    let (_, opens_at) = closed_now();

    // The handshake succeeds, so the page can say when the room opens.
    let mut family = viewer(&server, VIEWER_CODE).await;
    let status = assert_status(&recv_text(&mut family).await);
    assert_eq!(status["state"], "closed", "{status}");
    assert_eq!(status["opens_at"], opens_at, "{status}");
    assert!(status["message"].is_string(), "{status}");

    // A family alone does not open the camera: the test pattern, which starts
    // within an interval of being wanted, publishes nothing over five of them,
    // and the family receives nothing.
    assert!(
        recv_within(&mut family, Duration::from_millis(INTERVAL_MS * 5))
            .await
            .is_none(),
        "a family of a closed room got a message"
    );
    let camera = server.hub.get("camera").expect("the camera stream").stats();
    assert_eq!(camera.frames_published, 0, "camera stayed off: {camera:?}");

    // A family's snapshot is refused with the reason.
    let refused = with_code(&server, VIEWER_CODE, "GET", "/snapshot.jpg", "").await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("opens"), "{}", refused.text());

    // Staff see the room, and the family still gets nothing.
    let mut staff = viewer(&server, STAFF_CODE).await;
    family_silent_while_staff_watch(&mut family, &mut staff, 5).await;

    // The admin makes it always open: the family is told and gets frames within
    // about one interval.
    let opened = admin(&server, "DELETE", "/api/streams/camera/schedule", "").await;
    assert_eq!(opened.status, 204, "{}", opened.text());
    let asked = Instant::now();
    let live = assert_status(&recv_text(&mut family).await);
    assert_eq!(live["state"], "live", "{live}");
    recv_frame(&mut family).await;
    assert!(
        asked.elapsed() < Duration::from_millis(INTERVAL_MS * 3) * time_scale(),
        "frames {:?} after opening",
        asked.elapsed()
    );
    let picture = with_code(&server, VIEWER_CODE, "GET", "/snapshot.jpg", "").await;
    assert_eq!(picture.status, 200, "{}", picture.text());

    // Closing it again over the API holds the family at once.
    let (hours, _) = closed_now();
    let closed = admin(
        &server,
        "PUT",
        "/api/streams/camera/schedule",
        &hours.to_string(),
    )
    .await;
    assert_eq!(closed.status, 200, "{}", closed.text());
    loop {
        match recv(&mut family).await {
            tokio_tungstenite::tungstenite::Message::Text(text)
                if !text.starts_with(DATA_URL_PREFIX) =>
            {
                let status = assert_status(&text);
                assert_eq!(status["state"], "closed", "{status}");
                assert_eq!(status["opens_at"], opens_at);
                break;
            }
            _ => {}
        }
    }
    family_silent_while_staff_watch(&mut family, &mut staff, 3).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_api_refuses_bad_hours_naming_the_field_and_only_for_the_admin() {
    let dir = TempDir::new("hours-api");
    let config = dir.write("kindercam.toml", "");
    let state = TempDir::new("hours-api-state");
    let server = room(&config, state.path()).await;

    let none = admin(&server, "GET", "/api/streams/camera/schedule", "").await;
    assert_eq!(none.status, 200, "{}", none.text());
    assert_eq!(none.json(), Value::Null, "no hours: always open");

    let period = |days: &str, from: &str, to: &str| {
        format!(r#"{{"days":{days},"from":"{from}","to":"{to}"}}"#)
    };
    let body = |zone: &str, open: &str, dates: &str| {
        format!(r#"{{"timezone":"{zone}","open":[{open}],"closed_dates":{dates}}}"#)
    };
    let weekdays = r#"["mon","tue","wed","thu","fri"]"#;
    let good = period(weekdays, "07:30", "16:30");
    for (bad, field) in [
        (body("Mars/Olympus", &good, "[]"), "timezone"),
        (
            body(
                ZONE,
                &period(r#"["mon","someday"]"#, "07:30", "16:30"),
                "[]",
            ),
            "open[0].days[1]",
        ),
        (
            body(
                ZONE,
                &format!("{good},{}", period(weekdays, "7h30", "16:30")),
                "[]",
            ),
            "open[1].from",
        ),
        (
            body(ZONE, &period(weekdays, "16:30", "07:30"), "[]"),
            "open[0].to",
        ),
        (
            body(ZONE, &period(r#"["fri"]"#, "22:00", "06:00"), "[]"),
            "open[0].to",
        ),
        (body(ZONE, &good, r#"["2026-02-30"]"#), "closed_dates[0]"),
        ("{not json".to_owned(), "schedule"),
    ] {
        let reply = admin(&server, "PUT", "/api/streams/camera/schedule", &bad).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
        assert_eq!(reply.json()["field"], field, "{bad}: {}", reply.text());
        assert!(
            reply.json()["error"].as_str().unwrap().starts_with(field),
            "{}",
            reply.text()
        );
    }
    // Nothing was changed by the refusals.
    let still = admin(&server, "GET", "/api/streams/camera/schedule", "").await;
    assert_eq!(still.json(), Value::Null);

    let bad_name = admin(
        &server,
        "PUT",
        "/api/streams/Bad%20Name/schedule",
        &body(ZONE, &good, "[]"),
    )
    .await;
    assert_eq!(bad_name.status, 400, "{}", bad_name.text());
    assert_eq!(bad_name.json()["field"], "name");

    // A night shift is two periods, and reads back in the same shape.
    let night = body(
        ZONE,
        &format!(
            "{},{}",
            period(r#"["fri"]"#, "22:00", "24:00"),
            period(r#"["sat"]"#, "00:00", "06:00")
        ),
        r#"["2026-12-25"]"#,
    );
    let set = admin(&server, "PUT", "/api/streams/sala-2/schedule", &night).await;
    assert_eq!(set.status, 200, "{}", set.text());
    let expected: Value = serde_json::from_str(&night).unwrap();
    assert_eq!(set.json(), expected);
    let read = admin(&server, "GET", "/api/streams/sala-2/schedule", "").await;
    assert_eq!(
        read.json(),
        expected,
        "hours for a room before its stream exists"
    );

    // Staff and families cannot read or change hours.
    for code in [STAFF_CODE, VIEWER_CODE] {
        for (method, body) in [("GET", ""), ("PUT", night.as_str()), ("DELETE", "")] {
            let reply =
                with_code(&server, code, method, "/api/streams/camera/schedule", body).await;
            assert_eq!(reply.status, 403, "{method} with {code}: {}", reply.text());
        }
    }
    // A browser session needs its CSRF token to change them.
    let cookie = login(&server, "Directora", ADMIN_CODE).await;
    let no_token = http_request(
        server.http,
        "PUT",
        "/api/streams/camera/schedule",
        &[("Cookie", &cookie)],
        &night,
    )
    .await;
    assert_eq!(no_token.status, 403, "{}", no_token.text());
    let patch = admin(&server, "PATCH", "/api/streams/camera/schedule", &night).await;
    assert_eq!(patch.status, 405);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hours_set_over_the_api_win_over_the_file_and_survive_a_restart() {
    let dir = TempDir::new("hours-restart");
    let config = dir.write("kindercam.toml", &closed_now_toml());
    let state = TempDir::new("hours-restart-state");
    let (file_hours, _) = closed_now();

    // The file's hours are in force.
    let server = room(&config, state.path()).await;
    let read = admin(&server, "GET", "/api/streams/camera/schedule", "").await;
    assert_eq!(read.json(), file_hours);
    // The admin makes the room always open, over the file's hours.
    let opened = admin(&server, "DELETE", "/api/streams/camera/schedule", "").await;
    assert_eq!(opened.status, 204);
    server.stop().await;

    let server = room(&config, state.path()).await;
    let read = admin(&server, "GET", "/api/streams/camera/schedule", "").await;
    assert_eq!(read.json(), Value::Null, "always open after the restart");
    let mut family = viewer(&server, VIEWER_CODE).await;
    recv_frame(&mut family).await;
    drop(family);

    // Hours set over the API (here for a room and for the camera) are kept too.
    let (hours, opens_at) = closed_now();
    for room_name in ["camera", "sala-2"] {
        let set = admin(
            &server,
            "PUT",
            &format!("/api/streams/{room_name}/schedule"),
            &hours.to_string(),
        )
        .await;
        assert_eq!(set.status, 200, "{}", set.text());
    }
    server.stop().await;

    // Over a config file without hours at all.
    std::fs::write(&config, "").unwrap();
    let server = room(&config, state.path()).await;
    for room_name in ["camera", "sala-2"] {
        let read = admin(
            &server,
            "GET",
            &format!("/api/streams/{room_name}/schedule"),
            "",
        )
        .await;
        assert_eq!(read.json(), hours, "{room_name}");
    }
    let mut family = viewer(&server, VIEWER_CODE).await;
    let status = assert_status(&recv_text(&mut family).await);
    assert_eq!(
        (&status["state"], &status["opens_at"]),
        (&json!("closed"), &json!(opens_at))
    );
    server.stop().await;
}
