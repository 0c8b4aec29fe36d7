use super::*;

const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn minimal() -> String {
    format!(
        r#"
[server]
public_url = "https://app.example.com"
[oidc]
issuer = "https://auth.pingone.com/ENV/as"
client_id = "spa"
client_secret = "s3cret"
[session]
keys = ["{KEY}"]
"#
    )
}

fn errors(toml: &str, vars: Vec<(String, String)>) -> Vec<String> {
    match Settings::from_toml_str(toml, vars) {
        Ok(_) => vec![],
        Err(ConfigErrors(e)) => e,
    }
}

#[test]
fn minimal_config_gets_spec_defaults() {
    let s = Settings::from_toml_str(&minimal(), vec![]).map_err(|e| e.to_string());
    let s = s.as_ref().map_err(String::as_str);
    let Ok(s) = s else { panic!("{s:?}") };
    assert_eq!(s.server.public_origin, "https://app.example.com");
    assert_eq!(s.oidc.redirect_uri.as_str(), "https://app.example.com/callback");
    assert!(s.oidc.redirect_is_callback);
    assert_eq!(s.oidc.post_logout_redirect_uri, "https://app.example.com/");
    assert_eq!(s.oidc.scope, "openid profile email offline_access");
    assert_eq!(s.session.idle_timeout_secs, 1800);
    assert!(matches!(s.oidc.client_auth, ClientAuth::ClientSecretBasic));
}

#[test]
fn every_missing_key_is_reported_at_once() {
    let e = errors("", vec![]);
    for key in
        ["server.public_url: required", "oidc.issuer: required", "oidc.client_id: required", "session.keys: required"]
    {
        assert!(e.iter().any(|l| l.starts_with(key)), "{key} not in {e:?}");
    }
}

#[test]
fn environment_overrides_the_file_and_keeps_strings() {
    let vars = vec![
        ("BFF_OIDC__CLIENT_SECRET".to_owned(), "0123".to_owned()),
        ("BFF_CONFIG".to_owned(), "/etc/x.toml".to_owned()),
        ("BFF_SERVER__MAX_CONNECTIONS".to_owned(), "7".to_owned()),
    ];
    let s = Settings::from_toml_str(&minimal(), vars).map_err(|e| e.to_string());
    let Ok(s) = s else { panic!("{s:?}") };
    assert_eq!(s.oidc.client_secret.expose(), "0123");
    assert_eq!(s.server.max_connections, 7);
}

#[test]
fn unknown_and_mistyped_keys_are_named() {
    let toml = format!(
        "{}\nclientid = 1\n[logging]\naccess_log = \"yes\"\n",
        minimal().replace("[session]", "[session]\nidle_timeout_secs = \"long\"")
    );
    let e = errors(&toml, vec![]);
    assert!(
        e.iter()
            .any(|l| l.starts_with("logging.clientid: unknown key") || l.starts_with("session.clientid: unknown key")),
        "{e:?}"
    );
    assert!(e.iter().any(|l| l.starts_with("session.idle_timeout_secs:")), "{e:?}");
    assert!(e.iter().any(|l| l.starts_with("logging.access_log:")), "{e:?}");
}

#[test]
fn reserved_auth_params_and_bad_keys_are_refused() {
    let toml = minimal()
        .replace("[session]", "auth_params = { state = \"x\", prompt = \"login\" }\n[session]")
        .replace(KEY, "c2hvcnQ=");
    let e = errors(&toml, vec![]);
    assert!(e.iter().any(|l| l.starts_with("oidc.auth_params: state")), "{e:?}");
    assert!(e.iter().any(|l| l.starts_with("session.keys: key #1")), "{e:?}");
}

#[test]
fn insecure_cookies_only_on_loopback_http() {
    let toml = minimal().replace("[session]", "[session]\nsecure = false");
    assert!(errors(&toml, vec![]).iter().any(|l| l.starts_with("session.secure")));
    let toml = toml.replace("https://app.example.com", "http://127.0.0.1:8080");
    assert!(errors(&toml, vec![]).is_empty());
}

/// SPEC §9: cluster and sentinel need a Redis url listing nodes, sentinel its master's name.
#[test]
fn redis_modes_need_their_urls_and_names() {
    let redis = |extra: &str| minimal().replace("[session]", &format!("[session]\nstore = \"redis\"\n{extra}"));
    let lines = errors(&redis("redis_mode = \"cluster\""), vec![]);
    assert!(
        lines
            .iter()
            .any(|l| l == "session.redis_mode: \"cluster\" needs session.url (or url_file) naming the Redis nodes"),
        "{lines:?}"
    );
    let cookie = minimal().replace("[session]", "[session]\nredis_mode = \"sentinel\"\nredis_sentinel_master = \"m\"");
    assert!(
        errors(&cookie, vec![]).iter().any(|l| l.starts_with("session.redis_mode: \"sentinel\" needs session.url"))
    );
    let lines = errors(&redis("redis_mode = \"sentinel\"\nurl = \"redis://s1:26379,s2:26379\""), vec![]);
    assert_eq!(
        lines,
        ["session.redis_sentinel_master: required with redis_mode = \"sentinel\" (the name the sentinels monitor)"]
    );
    let postgres = minimal().replace("[session]", "[session]\nredis_mode = \"cluster\"\nurl = \"postgres://db/bff\"");
    assert_eq!(
        errors(&postgres, vec![]),
        ["session.redis_mode: \"cluster\" needs a redis:// or rediss:// session.url"]
    );
    let lines = errors(&redis("url = \"redis://a:7000,b:7000\""), vec![]);
    assert!(lines.iter().any(|l| l.contains("lists several nodes: set session.redis_mode")), "{lines:?}");
    assert!(
        errors(&redis("redis_mode = \"ring\"\nurl = \"redis://a\""), vec![])
            .iter()
            .any(|l| l.starts_with("session.redis_mode: must be"))
    );
    assert!(!errors(&redis("redis_sentinel_master = \"m\"\nurl = \"redis://a\""), vec![]).is_empty());
    let ok = |extra: &str| {
        let toml = redis(extra);
        let s = Settings::from_toml_str(&toml, vec![]).unwrap_or_else(|e| panic!("{e}"));
        let url = s.session.url.unwrap_or_else(|| panic!("no url"));
        (url.redis_mode.clone(), super::store_url::warnings(&url))
    };
    let (mode, warnings) = ok("redis_mode = \"cluster\"\nurl = \"rediss://u:p%40w@a:7000,b:7000,c:7000/?prefix=x:\"");
    assert_eq!((mode, warnings.len()), (RedisMode::Cluster, 0));
    let (_, warnings) = ok("redis_mode = \"cluster\"\nurl = \"redis://a:7000\"");
    assert!(warnings[0].starts_with("session.url: lists one cluster node only"), "{warnings:?}");
    let (mode, _) =
        ok("redis_mode = \"sentinel\"\nredis_sentinel_master = \"mymaster\"\nurl = \"redis://s1:26379,s2:26379\"");
    assert_eq!(mode, RedisMode::Sentinel { master: "mymaster".into() });
    let (nodes, prefix) = super::store_url::redis_nodes("rediss://u:p%40w@a:7000,b:7001/2?prefix=x:&protocol=3")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(nodes, ["rediss://u:p%40w@a:7000/2?protocol=3", "rediss://u:p%40w@b:7001/2?protocol=3"]);
    assert_eq!(prefix, "x:");
    assert!(super::store_url::redis_nodes("redis://a:1,,b:2").is_err());
}

#[test]
fn a_server_side_store_needs_a_matching_url() {
    let toml = minimal().replace("[session]", "[session]\nstore = \"redis\"");
    assert!(errors(&toml, vec![]).iter().any(|l| l.starts_with("session.url: required")));
    let ok = toml.replace("store = \"redis\"", "store = \"redis\"\nurl = \"redis://127.0.0.1:6379/?prefix=x:\"");
    assert!(errors(&ok, vec![]).is_empty(), "{:?}", errors(&ok, vec![]));
    let sqlite = minimal().replace("[session]", "[session]\nstore = \"sqlite\"\nurl = \"sqlite://s.db?mode=rwc\"");
    assert!(errors(&sqlite, vec![]).is_empty());
    // In cookie mode the URL is optional and may name any backend.
    let cookie = minimal().replace("[session]", "[session]\nurl = \"postgres://u:p@db/bff\"");
    assert!(errors(&cookie, vec![]).is_empty());
}

#[test]
fn routes_are_validated_and_sorted_longest_first() {
    let ok = format!(
        "{}\n[[routes]]\nprefix = \"/api\"\nupstream = \"http://orders:8080/\"\n[[routes]]\nprefix = \"/api/admin\"\nupstream = \"http://admin\"\nauth = \"none\"\n",
        minimal()
    );
    let s = Settings::from_toml_str(&ok, vec![]).map_err(|e| e.to_string());
    let Ok(s) = s else { panic!("{s:?}") };
    assert_eq!(s.routes[0].prefix, "/api/admin");
    assert_eq!(s.routes[1].upstream, "http://orders:8080");
    assert!(s.routes[1].matches("/api") && s.routes[1].matches("/api/x") && !s.routes[1].matches("/apix"));

    let bad = format!(
        "{}\n[[routes]]\nprefix = \"/session\"\nupstream = \"http://x\"\n[[routes]]\nprefix = \"/dl\"\nupstream = \"ftp://x\"\ncsrf = false\n[[routes]]\nprefix = \"/\"\nupstream = \"http://x\"\n",
        minimal()
    );
    let e = errors(&bad, vec![]);
    assert!(e.iter().any(|l| l.starts_with("routes[0].prefix: overlaps")), "{e:?}");
    assert!(e.iter().any(|l| l.starts_with("routes[1].upstream")), "{e:?}");
    assert!(e.iter().any(|l| l.starts_with("routes[1].csrf")), "{e:?}");
    assert!(e.iter().any(|l| l.starts_with("routes[2].prefix")), "{e:?}");
}

#[test]
fn route_prefixes_that_read_the_same_to_a_lenient_upstream_are_refused() {
    let toml = format!(
        "{}\n[[routes]]\nprefix = \"/api\"\nupstream = \"http://a\"\n[[routes]]\nprefix = \"/API\"\nupstream = \"http://b\"\n\
         [[routes]]\nprefix = \"/v1.\"\nupstream = \"http://c\"\n[[routes]]\nprefix = \"/v1\"\nupstream = \"http://d\"\n\
         [[routes]]\nprefix = \"/Session\"\nupstream = \"http://e\"\n[[routes]]\nprefix = \"/x/...\"\nupstream = \"http://f\"\n",
        minimal()
    );
    let e = errors(&toml, vec![]);
    assert!(e.iter().any(|l| l.contains("\"/api\" and \"/API\"") || l.contains("\"/API\" and \"/api\"")), "{e:?}");
    assert!(e.iter().any(|l| l.contains("\"/v1.\"") && l.contains("read the same")), "{e:?}");
    assert!(e.iter().any(|l| l.starts_with("routes[4].prefix: overlaps")), "{e:?}");
    assert!(e.iter().any(|l| l.starts_with("routes[5].prefix: must look like")), "{e:?}");
}

#[test]
fn exchange_keys_need_token_exchange_and_a_session() {
    let route =
        |body: &str| format!("{}\n[[routes]]\nprefix = \"/pay\"\nupstream = \"http://pay:8080\"\n{body}\n", minimal());
    for (body, want) in [
        ("resource = \"https://pay.example/\"", "routes[0].resource: only with token = \"exchange\""),
        ("audience = \"pay\"", "routes[0].audience: only with token = \"exchange\""),
        ("scopes = [\"read\"]\ntoken = \"session\"", "routes[0].scopes: only with token = \"exchange\""),
        ("token = \"none\"\nscopes = [\"read\"]", "routes[0].scopes: only with token = \"exchange\""),
        ("token = \"exchange\"\nauth = \"none\"", "routes[0].token: \"exchange\" needs a session"),
        ("token = \"exchange\"\nresource = \"not a uri\"", "routes[0].resource: must be an absolute URI"),
        ("token = \"exchange\"\nresource = \"https://pay.example/#x\"", "routes[0].resource: must be an absolute URI"),
        ("token = \"exchange\"\nscopes = [\"a b\"]", "routes[0].scopes: scope tokens may not"),
        ("token = \"bearer\"", "routes[0].token: must be session, exchange or none"),
    ] {
        let e = errors(&route(body), vec![]);
        assert!(e.iter().any(|l| l.starts_with(want)), "{body:?}: {want:?} not in {e:?}");
    }
    let ok = route(
        "token = \"exchange\"\nresource = \"https://pay.example/\"\naudience = \"pay\"\nscopes = [\"read\", \"write\"]",
    );
    let s = Settings::from_toml_str(&ok, vec![]).map_err(|e| e.to_string());
    let Ok(s) = s else { panic!("{s:?}") };
    let spec = routes::ExchangeSpec {
        resource: Some("https://pay.example/".into()),
        audience: Some("pay".into()),
        scope: Some("read write".into()),
    };
    assert_eq!(s.routes[0].token, routes::RouteToken::Exchange(spec));
    let none = route("token = \"none\"\nauth = \"optional\"");
    assert!(errors(&none, vec![]).is_empty());
}

#[test]
fn oidc_resource_is_a_list_of_absolute_uris_and_not_an_auth_param() {
    let vars = vec![("BFF_OIDC__RESOURCE".to_owned(), "https://a.example/,https://b.example/api".to_owned())];
    let s = Settings::from_toml_str(&minimal(), vars).map_err(|e| e.to_string());
    let Ok(s) = s else { panic!("{s:?}") };
    assert_eq!(s.oidc.resource, ["https://a.example/", "https://b.example/api"]);
    let urn = vec![("BFF_OIDC__RESOURCE".to_owned(), "urn:example:api".to_owned())];
    assert!(errors(&minimal(), urn).is_empty(), "a URN is an absolute URI");
    let bad = vec![("BFF_OIDC__RESOURCE".to_owned(), "urn-without-scheme".to_owned())];
    assert!(errors(&minimal(), bad).iter().any(|l| l.starts_with("oidc.resource:")));
    let toml = minimal().replace("[session]", "auth_params = { resource = \"https://x.example/\" }\n[session]");
    assert!(errors(&toml, vec![]).iter().any(|l| l.starts_with("oidc.auth_params: resource is set by oidc-bff")));
}

#[test]
fn providers_are_read_like_oidc_from_their_own_keys_and_named_in_every_problem() {
    let toml = format!(
        "{}\n[[providers]]\nname = \"partners\"\nissuer = \"https://login.example.com/t/v2.0\"\nclient_id = \"p\"\n\
         client_secret_file = \"/nonexistent/partners-secret\"\n",
        minimal()
            .replace("client_secret = \"s3cret\"", "client_secret = \"s3cret\"\ndpop = true\nscopes = [\"openid\"]")
    );
    // The file's secret is missing; the environment supplies it, by the provider's name.
    let vars = vec![
        ("BFF_PROVIDERS__PARTNERS__CLIENT_SECRET_FILE".to_owned(), String::new()),
        ("BFF_PROVIDERS__PARTNERS__CLIENT_SECRET".to_owned(), "0123".to_owned()),
    ];
    let s = Settings::from_toml_str(&toml, vars).map_err(|e| e.to_string());
    let p = &s.as_ref().map_err(String::as_str).unwrap_or_else(|e| panic!("{e}")).providers;
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].name.as_str(), p[0].client_secret.expose()), ("partners", "0123"));
    // Unset keys take the built-in defaults, never [oidc]'s values.
    assert!(!p[0].dpop);
    assert_eq!(p[0].scope, "openid profile email offline_access");
    assert_eq!(p[0].redirect_uri.as_str(), "https://app.example.com/callback");

    let bad = format!(
        "{}\n[[providers]]\nname = \"partners\"\nissuer = \"https://auth.pingone.com/ENV/as\"\nclientid = \"x\"\n\
         refresh_grace_secs = 5\n[[providers]]\nname = \"Bad_Name\"\n[[providers]]\nname = \"default\"\n\
         [[providers]]\nname = \"p2\"\nissuer = \"https://auth.pingone.com/ENV/as\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
         redirect_uri = \"https://app.example.com/callback/partners\"\n\
         [[routes]]\nprefix = \"/api\"\nupstream = \"http://api:1\"\nproviders = [\"nobody\"]\n",
        minimal()
    );
    let mut e = errors(&bad, vec![("BFF_PROVIDERS__GHOST__CLIENT_ID".to_owned(), "x".to_owned())]);
    e.sort();
    let want = [
        "providers.default.name: \"default\" is [oidc]'s name",
        "providers.ghost: set from the environment, but no [[providers]] entry has that name",
        "providers.p2.redirect_uri: /callback/partners is the callback of provider \"partners\"",
        "providers.partners.client_id: required",
        "providers.partners.client_secret: required",
        "providers.partners.clientid: unknown key",
        "providers.partners.refresh_grace_secs: set it in [oidc]",
        "providers.p2.issuer: already the issuer of provider \"default\"",
        "providers[1].name: \"Bad_Name\" must match",
        "routes[0].providers: \"nobody\" is not a configured provider",
    ];
    for w in want {
        assert!(e.iter().any(|l| l.starts_with(w)), "missing {w:?} in {e:#?}");
    }
}

#[test]
fn max_event_streams_stays_below_max_connections() {
    let with = |vars: &[(&str, &str)]| {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_toml_str(&minimal(), vars).map_err(|e| e.to_string())
    };
    let s = with(&[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.server.max_event_streams, s.session.events_warning_secs), (1000, 120));
    // Unset, it follows a lower connection cap; set, it must stay below it.
    let s = with(&[("BFF_SERVER__MAX_CONNECTIONS", "50")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.server.max_event_streams, 49);
    let e = with(&[("BFF_SERVER__MAX_CONNECTIONS", "50"), ("BFF_SERVER__MAX_EVENT_STREAMS", "50")]);
    assert!(e.is_err_and(|e| e.contains("server.max_event_streams: must be below server.max_connections")));
}

#[test]
fn telemetry_endpoint_gets_v1_traces_and_bad_values_are_refused() {
    let with = |t: &str| format!("{}[telemetry]\n{t}\n", minimal());
    let traces = |toml: &str, vars: Vec<(String, String)>| {
        Settings::from_toml_str(toml, vars).ok().and_then(|s| s.telemetry.traces_url).map(|u| u.to_string())
    };
    assert_eq!(traces(&minimal(), vec![]), None, "off by default");
    assert_eq!(
        traces(&with("otlp_endpoint = \"http://collector:4318/\""), vec![]),
        Some("http://collector:4318/v1/traces".to_owned())
    );
    assert_eq!(
        traces(&with("otlp_endpoint = \"https://otel.example.com/base\""), vec![]),
        Some("https://otel.example.com/base/v1/traces".to_owned())
    );
    // The standard variable when the key is unset; the key wins when both are.
    let otel = || vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), "http://from-env:4318".to_owned())];
    assert_eq!(traces(&minimal(), otel()), Some("http://from-env:4318/v1/traces".to_owned()));
    assert_eq!(
        traces(&with("otlp_endpoint = \"http://from-file:4318\""), otel()),
        Some("http://from-file:4318/v1/traces".to_owned())
    );
    for (bad, key) in [
        ("otlp_endpoint = \"http://user:pw@collector:4318\"", "telemetry.otlp_endpoint: must not carry credentials"),
        ("otlp_endpoint = \"http://collector:4318#x\"", "telemetry.otlp_endpoint:"),
        ("otlp_endpoint = \"http://collector:4318?x=1\"", "telemetry.otlp_endpoint:"),
        ("otlp_endpoint = \"ftp://collector\"", "telemetry.otlp_endpoint:"),
        ("sample_ratio = 1.5", "telemetry.sample_ratio:"),
        ("follow_incoming_sampled = \"sometimes\"", "telemetry.follow_incoming_sampled:"),
        ("service_name = \"\"", "telemetry.service_name:"),
    ] {
        let e = errors(&with(bad), vec![]);
        assert!(e.iter().any(|l| l.starts_with(key)), "{bad}: {e:?}");
        assert!(!e.iter().any(|l| l.contains("pw@")), "credentials echoed: {e:?}");
    }
    let vars = vec![("BFF_TELEMETRY__SAMPLE_RATIO".to_owned(), "0.25".to_owned())];
    let s = Settings::from_toml_str(&minimal(), vars).map_err(|e| e.to_string());
    assert_eq!(s.map(|s| s.telemetry.sample_ratio), Ok(0.25));
    // Plain http to another host is accepted with a warning; loopback is not warned about.
    let s = Settings::from_toml_str(&with("otlp_endpoint = \"http://collector:4318\""), vec![]);
    assert!(s.is_ok_and(|s| s.warnings().iter().any(|w| w.starts_with("telemetry.otlp_endpoint"))));
    let s = Settings::from_toml_str(&with("otlp_endpoint = \"http://127.0.0.1:4318\""), vec![]);
    assert!(s.is_ok_and(|s| s.warnings().is_empty()));
}
