use super::*;

fn tracing_for(follow: FollowSampled, ratio: f64, forced: u32) -> Tracing {
    let provider = SdkTracerProvider::builder().build();
    Tracing {
        tracer: provider.tracer("test"),
        ratio,
        follow,
        forced: Budget::new(forced),
        propagator: TraceContextPropagator::new(),
        _provider: provider,
    }
}

fn headers(traceparent: &str, tracestate: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_str(traceparent).unwrap_or(HeaderValue::from_static("x")));
    if let Some(s) = tracestate {
        h.insert("tracestate", HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("x")));
    }
    h
}

const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const NOT_SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

fn sampled(cx: &Context) -> bool {
    cx.span().span_context().is_sampled()
}

#[test]
fn an_incoming_trace_is_continued_and_its_flag_followed_as_configured() {
    let t = tracing_for(FollowSampled::Always, 0.0, 10);
    let cx = t.parent_of(&headers(SAMPLED, None), false);
    assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(sampled(&cx), "always: the incoming flag is followed");
    assert!(!sampled(&t.parent_of(&headers(NOT_SAMPLED, None), false)));
    let never = tracing_for(FollowSampled::Never, 0.0, 10);
    let cx = never.parent_of(&headers(SAMPLED, None), true);
    assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(!sampled(&cx), "never: the ratio decides (0.0)");
    let proxies = tracing_for(FollowSampled::TrustedProxies, 0.0, 10);
    assert!(!sampled(&proxies.parent_of(&headers(SAMPLED, None), false)));
    assert!(sampled(&proxies.parent_of(&headers(SAMPLED, None), true)));
    // With ratio 1.0 every trace is sampled, whatever the browser says when not followed.
    assert!(sampled(&tracing_for(FollowSampled::Never, 1.0, 0).parent_of(&headers(NOT_SAMPLED, None), false)));
}

#[test]
fn forced_samples_are_bounded_per_second() {
    let t = tracing_for(FollowSampled::Always, 0.0, 3);
    let n = (0..10).filter(|_| sampled(&t.parent_of(&headers(SAMPLED, None), false))).count();
    assert_eq!(n, 3);
    // Traces the ratio samples anyway take nothing from the budget.
    let all = tracing_for(FollowSampled::Always, 1.0, 0);
    assert!((0..10).all(|_| sampled(&all.parent_of(&headers(SAMPLED, None), false))));
}

#[test]
fn tracestate_is_kept_from_trusted_proxies_only_and_bad_traceparents_start_a_new_trace() {
    let t = tracing_for(FollowSampled::Always, 1.0, 10);
    let trusted = t.parent_of(&headers(SAMPLED, Some("vendor=abc")), true);
    assert_eq!(trusted.span().span_context().trace_state().header(), "vendor=abc");
    let untrusted = t.parent_of(&headers(SAMPLED, Some("vendor=abc")), false);
    assert_eq!(untrusted.span().span_context().trace_state().header(), "");
    for bad in [
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        assert!(!t.parent_of(&headers(bad, None), false).has_active_span(), "{bad}");
    }
}

#[test]
fn unknown_methods_are_other() {
    assert_eq!(method_label(&Method::GET), "GET");
    assert_eq!(method_label(&Method::from_bytes(b"PROPFIND").unwrap_or(Method::GET)), "_OTHER");
}

#[test]
fn a_trace_id_chosen_by_the_browser_does_not_decide_sampling() {
    // Low 64 bits of zero: what a trace-id ratio sampler would always sample.
    let chosen = "00-4bf92f3577b34da60000000000000000-00f067aa0ba902b7-01";
    let t = tracing_for(FollowSampled::Never, 0.01, 0);
    let n = (0..400).filter(|_| sampled(&t.parent_of(&headers(chosen, None), false))).count();
    assert!(n < 40, "{n} of 400 sampled at a ratio of 0.01");
    // Followed, it is a forced sample like any other: bounded by the budget.
    let t = tracing_for(FollowSampled::Always, 0.0, 2);
    assert_eq!((0..50).filter(|_| sampled(&t.parent_of(&headers(chosen, None), false))).count(), 2);
}
