//! Registry authentication as the distribution spec and Docker's token service define it: a
//! request answered 401 names a scheme in `WWW-Authenticate`; `Basic` takes the credentials
//! on every request, `Bearer` sends us to a token service (`realm`) for a token scoped to
//! `repository:REPO:pull`, got with the credentials (GET with Basic) or an identity token
//! (POST of an OAuth2 refresh token), or anonymously.
//!
//! Owns: parsing challenges and getting tokens. Must not touch: which credentials apply (the
//! puller picks them) or where tokens are kept.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri, header};
use serde::Deserialize;

use super::super::credentials::Credential;
use super::client::{Failure, refusal};
use super::http::Transport;

/// Token answers are small JSON documents.
const TOKEN_MAX: u64 = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// The first challenge of a `WWW-Authenticate` value we can answer.
pub(crate) fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(params);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
    })
}

/// `k="v", k2=v2`: quoted values may hold commas (a scope list) and `\"`.
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((key, after)) = rest.split_once('=') else {
            return out;
        };
        let mut value = String::new();
        if let Some(quoted) = after.strip_prefix('"') {
            let mut chars = quoted.char_indices();
            rest = "";
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        rest = &quoted[i + 1..];
                        break;
                    }
                    c => value.push(c),
                }
            }
        } else {
            let end = after.find(',').unwrap_or(after.len());
            value = after[..end].trim().to_string();
            rest = &after[end..];
        }
        out.push((key.trim().to_string(), value));
    }
}

/// `Authorization: Basic …` for a user and password.
pub(crate) fn basic(credential: &Credential) -> Option<HeaderValue> {
    let pair = format!("{}:{}", credential.username, credential.password);
    HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(pair))).ok()
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// A token from the realm for pulling `repository`, as an `Authorization` value.
pub(crate) async fn bearer(
    transport: &Transport,
    realm: &str,
    service: Option<&str>,
    repository: &str,
    credential: Option<&Credential>,
) -> Result<HeaderValue, Failure> {
    let refresh = credential.and_then(|c| c.identity_token.as_deref());
    // Built before any await: the serializer is not Send.
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(service) = service {
            query.append_pair("service", service);
        }
        query.append_pair("scope", &format!("repository:{repository}:pull"));
        if let Some(token) = refresh {
            query.append_pair("grant_type", "refresh_token");
            query.append_pair("refresh_token", token);
            query.append_pair("client_id", "edgepod");
        }
        query.finish()
    };
    let mut headers = HeaderMap::new();
    let (method, uri, body) = if refresh.is_some() {
        // An identity token is an OAuth2 refresh token: only the POST form takes it.
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        (Method::POST, realm.to_string(), Bytes::from(query))
    } else {
        if let Some(header) = credential.and_then(basic) {
            headers.insert(header::AUTHORIZATION, header);
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        (Method::GET, format!("{realm}{sep}{query}"), Bytes::new())
    };
    let uri = Uri::try_from(uri.as_str())
        .map_err(|e| Failure::Refused(format!("token realm {realm:?}: {e}")))?;
    let response = transport
        .send(method, uri, headers, body, None)
        .await
        .map_err(|e| Failure::Transient(format!("token service {realm}: {e}")))?;
    let status = response.status();
    let body = transport
        .read_all(response.into_body(), TOKEN_MAX)
        .await
        .map_err(|e| Failure::Transient(format!("token service {realm}: {e}")))?;
    if !status.is_success() {
        return Err(refusal(status, &body, &format!("token service {realm}: ")));
    }
    let answer: TokenAnswer = serde_json::from_slice(&body)
        .map_err(|e| Failure::Refused(format!("token service {realm}: {e}")))?;
    answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
        .ok_or_else(|| Failure::Refused(format!("token service {realm}: no token in its answer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_as_registries_send_them() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#;
        assert_eq!(
            parse_challenge(hub),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".to_string(),
                service: Some("registry.docker.io".to_string()),
            })
        );
        assert_eq!(
            parse_challenge("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("bearer realm=http://t/x"),
            Some(Challenge::Bearer {
                realm: "http://t/x".to_string(),
                service: None
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
    }
}
