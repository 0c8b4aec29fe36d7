//! The IdP's clock against ours (SPEC §7 `doctor`): the `Date` header of one GET of the
//! discovery document, read between two readings of our clock. `Date` has a resolution of one
//! second, so the skew reported is the smallest one the three readings prove: 0 when they agree
//! within that second and the round trip.
//!
//! Thresholds: `warn` over [`WARN_SECS`] (the clocks are not synchronised: NTP?); `fail` over the
//! provider's `clock_skew_secs` (default 60), where ID tokens start to be refused (`iat` in the
//! future) and the IdP may refuse our 60-second client assertions and DPoP proofs.

use super::report::Line;
use crate::oidc::http::{IdpHttp, IdpHttpError};
use url::Url;

pub const CHECK: &str = "clock";

/// Skew above this many seconds is a warning.
pub const WARN_SECS: u64 = 5;

/// GET `url` with the IdP client (https but on loopback, no redirects, bounded time) and judge
/// the `Date` of its answer.
pub async fn check(http: &IdpHttp, url: &Url, allowed_skew_secs: u64) -> Line {
    let sent_ms = crate::clock::now_ms();
    let resp = http.get("idp discovery", url).await;
    let received_ms = crate::clock::now_ms();
    match resp {
        Ok(r) => {
            let date = r.date.as_ref().and_then(|v| v.to_str().ok());
            verdict(date, sent_ms, received_ms, allowed_skew_secs)
        }
        Err(IdpHttpError::Timeout) => Line::fail(CHECK, format!("{url}: the IdP did not answer in time")),
        Err(IdpHttpError::Unavailable(why)) => Line::fail(CHECK, format!("{url}: {why}")),
    }
}

/// The verdict on a `Date` value received between our clock's `sent_ms` and `received_ms`.
pub fn verdict(date: Option<&str>, sent_ms: i64, received_ms: i64, allowed_skew_secs: u64) -> Line {
    let Some(date) = date else {
        return Line::warn(CHECK, "the IdP sent no Date header: its clock was not compared with ours");
    };
    let Some(idp) = parse_http_date(date) else {
        return Line::warn(CHECK, "the IdP's Date header is not an HTTP date: its clock was not compared with ours");
    };
    // The IdP wrote Date at some instant of [idp, idp + 1 s) of its clock, which was some instant
    // of [sent, received] of ours: the skew (IdP minus us) lies in this range.
    let (low, high) = (idp * 1000 - received_ms, (idp + 1) * 1000 - sent_ms);
    let skew_ms = if low > 0 {
        low
    } else if high < 0 {
        high
    } else {
        0
    };
    let abs_ms = skew_ms.unsigned_abs();
    let secs = (abs_ms + 500) / 1000;
    let side = if skew_ms > 0 { "ahead of" } else { "behind" };
    if abs_ms > allowed_skew_secs * 1000 {
        Line::fail(
            CHECK,
            format!(
                "the IdP's clock is {secs} s {side} ours, over clock_skew_secs ({allowed_skew_secs}): ID tokens \
                 would be refused; synchronise the clocks (NTP)"
            ),
        )
    } else if abs_ms > WARN_SECS * 1000 {
        Line::warn(
            CHECK,
            format!(
                "the IdP's clock is {secs} s {side} ours (within clock_skew_secs = {allowed_skew_secs}, over \
                 {WARN_SECS} s): synchronise the clocks (NTP)"
            ),
        )
    } else {
        Line::ok(CHECK, format!("the IdP's clock (Date header) is within {WARN_SECS} s of ours"))
    }
}

/// An HTTP date (RFC 9110 §5.6.7), as Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(s).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().and_then(|d| i64::try_from(d.as_secs()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Status;

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        // RFC 9110 §5.6.7: recipients accept the obsolete forms too.
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784111777));
        for bad in ["", "Sun, 06 Nov 1994 08:49:37 CET", "Sun, 32 Nov 1994 08:49:37 GMT", "yesterday"] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn skew_is_what_the_readings_prove() {
        let date = "Thu, 01 Jan 1970 00:16:40 GMT"; // 1000 s
        let at = |ms: i64| verdict(Some(date), ms, ms + 300, 60).status();
        // Our clock read 999.9–1000.2 s: within the Date's second.
        assert_eq!(at(999_900), Status::Ok);
        assert_eq!(at(1_004_000), Status::Ok);
        assert_eq!(at(1_006_000), Status::Ok);
        assert_eq!(at(1_006_500), Status::Warn);
        assert_eq!(at(994_000), Status::Warn);
        assert_eq!(at(1_060_500), Status::Warn);
        assert_eq!(at(1_061_500), Status::Fail);
        assert_eq!(at(939_000), Status::Fail);
        assert_eq!(verdict(None, 0, 1, 60).status(), Status::Warn);
        assert_eq!(verdict(Some("yesterday"), 0, 1, 60).status(), Status::Warn);
        // clock_skew_secs = 0: any skew the readings prove is refused.
        assert_eq!(verdict(Some(date), 1_002_000, 1_002_100, 0).status(), Status::Fail);
    }
}
