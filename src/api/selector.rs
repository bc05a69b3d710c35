//! Label selectors: the string syntax of `kubectl -l` and metav1.LabelSelector.
//!
//! Owns: parsing both forms into one model, matching labels, and the canonical string form.
//! Must not touch: where labels are stored or how objects are listed; the store calls
//! [`LabelSelector::matches`]. The data model below is the contract the store relies on.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

use super::validate::names;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, checking the key, the values and how many values the operator
    /// takes, as `labels.NewRequirement` does. Set values are sorted and deduplicated.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        if let Some(msg) = names::qualified_name(key).into_iter().next() {
            return Err(format!("invalid label key {key:?}: {msg}"));
        }
        let count_ok = match operator {
            Operator::In | Operator::NotIn => !values.is_empty(),
            Operator::Equals | Operator::NotEquals | Operator::Gt | Operator::Lt => {
                values.len() == 1
            }
            Operator::Exists | Operator::DoesNotExist => values.is_empty(),
        };
        if !count_ok {
            return Err(match operator {
                Operator::In | Operator::NotIn => {
                    format!("{key}: for 'in', 'notin' operators, values set can't be empty")
                }
                Operator::Exists | Operator::DoesNotExist => {
                    format!("{key}: values set must be empty for exists and does not exist")
                }
                Operator::Gt | Operator::Lt => {
                    format!("{key}: for 'Gt', 'Lt' operators, exactly one value is required")
                }
                _ => format!("{key}: exact-match compatibility requires one single value"),
            });
        }
        if matches!(operator, Operator::Gt | Operator::Lt) {
            if values[0].parse::<i64>().is_err() {
                return Err(format!(
                    "{key}: for 'Gt', 'Lt' operators, the value must be an integer"
                ));
            }
        } else {
            for v in &values {
                if let Some(msg) = names::label_value(v).into_iter().next() {
                    return Err(format!("invalid label value {v:?} for key {key:?}: {msg}"));
                }
            }
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => {
                !value.is_some_and(|v| self.values.contains(v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Gt | Operator::Lt => {
                let (Some(v), Some(bound)) = (value, self.values.first()) else {
                    return false;
                };
                match (v.parse::<i64>(), bound.parse::<i64>()) {
                    (Ok(v), Ok(b)) if self.operator == Operator::Gt => v > b,
                    (Ok(v), Ok(b)) => v < b,
                    _ => false,
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or_default();
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::Gt => write!(f, "{}>{first}", self.key),
            Operator::Lt => write!(f, "{}<{first}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
        }
    }
}

/// A conjunction of requirements; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `kubectl -l` syntax: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`,
    /// `a notin (x,y)`, joined by commas. Requirements come out sorted by key.
    pub fn parse(s: &str) -> Result<Self, String> {
        let tokens = lex(s)?;
        let mut parser = Parser { tokens, pos: 0 };
        let mut requirements = Vec::new();
        if !parser.at_end() {
            loop {
                requirements.push(parser.requirement()?);
                match parser.next() {
                    None => break,
                    Some(Token::Comma) if !parser.at_end() => {}
                    Some(Token::Comma) => {
                        return Err(format!("{s:?}: expected a requirement after the last ','"));
                    }
                    Some(t) => return Err(format!("{s:?}: expected ',' or the end, found {t}")),
                }
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Converts a metav1.LabelSelector (matchLabels and matchExpressions) as
    /// `LabelSelectorAsSelector` does. The empty selector matches everything.
    pub fn from_meta(selector: &metav1::LabelSelector) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(
                key,
                Operator::Equals,
                vec![value.clone()],
            )?);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            let values = expr.values.clone().unwrap_or_default();
            requirements.push(Requirement::new(&expr.key, operator, values)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string form, which [`LabelSelector::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Comma,
    Open,
    Close,
    Angle(char),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => write!(f, "{w:?}"),
            Token::Not => f.write_str("'!'"),
            Token::Equals => f.write_str("'='"),
            Token::DoubleEquals => f.write_str("'=='"),
            Token::NotEquals => f.write_str("'!='"),
            Token::Comma => f.write_str("','"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Angle(c) => write!(f, "'{c}'"),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | ',' | '(' | ')' | '<' | '>') || c.is_whitespace()
}

fn lex(s: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            ',' => Token::Comma,
            '(' => Token::Open,
            ')' => Token::Close,
            '<' | '>' => Token::Angle(c),
            '=' if chars.next_if(|&(_, c)| c == '=').is_some() => Token::DoubleEquals,
            '=' => Token::Equals,
            '!' if chars.next_if(|&(_, c)| c == '=').is_some() => Token::NotEquals,
            '!' => Token::Not,
            _ => {
                let mut end = start + c.len_utf8();
                while let Some((i, c)) = chars.next_if(|&(_, c)| !is_special(c)) {
                    end = i + c.len_utf8();
                }
                Token::Word(s[start..end].to_string())
            }
        };
        tokens.push(token);
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.tokens.len()
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let negated = self.peek() == Some(&Token::Not);
        if negated {
            self.pos += 1;
        }
        let key = match self.next() {
            Some(Token::Word(w)) => w,
            Some(t) => return Err(format!("expected a label key, found {t}")),
            None => return Err("expected a label key after '!'".to_string()),
        };
        let Some(token) = self.peek().filter(|t| **t != Token::Comma).cloned() else {
            let operator = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Requirement::new(&key, operator, Vec::new());
        };
        if negated {
            return Err(format!(
                "'!{key}' must stand alone: '!' only negates the existence of a key"
            ));
        }
        self.pos += 1;
        let operator = match token {
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::NotEquals => Operator::NotEquals,
            Token::Word(w) if w == "in" => Operator::In,
            Token::Word(w) if w == "notin" => Operator::NotIn,
            Token::Angle(c) => {
                return Err(format!(
                    "{key}: '{c}' is not supported in label selector strings; use '=', '!=', 'in' or 'notin'"
                ));
            }
            t => {
                return Err(format!(
                    "{key}: expected an operator ('=', '==', '!=', 'in', 'notin'), found {t}"
                ));
            }
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set(&key)?,
            _ => vec![self.exact_value()],
        };
        Requirement::new(&key, operator, values)
    }

    /// The value after `=`/`!=`; an empty value (`a=`) is allowed, as in Kubernetes.
    fn exact_value(&mut self) -> String {
        match self.peek() {
            Some(Token::Word(w)) => {
                let w = w.clone();
                self.pos += 1;
                w
            }
            _ => String::new(),
        }
    }

    fn value_set(&mut self, key: &str) -> Result<Vec<String>, String> {
        match self.next() {
            Some(Token::Open) => {}
            Some(t) => {
                return Err(format!(
                    "{key}: expected '(' to open the set of values, found {t}"
                ));
            }
            None => return Err(format!("{key}: expected '(' to open the set of values")),
        }
        let mut values = Vec::new();
        if self.peek() == Some(&Token::Close) {
            self.pos += 1;
            return Ok(values);
        }
        loop {
            values.push(self.exact_value());
            match self.next() {
                Some(Token::Comma) => {}
                Some(Token::Close) => return Ok(values),
                Some(t) => {
                    return Err(format!(
                        "{key}: expected ',' or ')' in the set of values, found {t}"
                    ));
                }
                None => return Err(format!("{key}: missing ')' to close the set of values")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap()
    }

    #[test]
    fn set_based_in_matches_any_listed_value() {
        let sel = parse("env in (debug, prod)");
        assert!(sel.matches(&labels(&[("env", "prod")])));
        assert!(sel.matches(&labels(&[("env", "debug")])));
        assert!(!sel.matches(&labels(&[("env", "test")])));
        assert!(!sel.matches(&labels(&[])));
        assert_eq!(sel.to_string(), "env in (debug,prod)");
    }

    #[test]
    fn notin_matches_missing_keys_too() {
        let sel = parse("env notin (prod,debug)");
        assert!(sel.matches(&labels(&[("env", "test")])));
        assert!(sel.matches(&labels(&[])));
        assert!(!sel.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn negated_key_means_does_not_exist() {
        let sel = parse("!env");
        assert_eq!(sel.requirements[0].operator, Operator::DoesNotExist);
        assert!(sel.matches(&labels(&[("app", "kubia")])));
        assert!(!sel.matches(&labels(&[("env", "prod")])));
        assert_eq!(sel.to_string(), "!env");
    }

    #[test]
    fn inequality_matches_other_values_and_missing_keys() {
        let sel = parse("creation_method!=manual");
        assert!(!sel.matches(&labels(&[("creation_method", "manual")])));
        assert!(sel.matches(&labels(&[("creation_method", "auto")])));
        assert!(sel.matches(&labels(&[])));
    }

    #[test]
    fn equality_forms_and_conjunction() {
        let sel = parse(" creation_method = manual , env==prod,app ");
        let l = labels(&[("creation_method", "manual"), ("env", "prod"), ("app", "x")]);
        assert!(sel.matches(&l));
        assert!(!sel.matches(&labels(&[("creation_method", "manual"), ("env", "prod")])));
        assert_eq!(sel.to_string(), "app,creation_method=manual,env=prod");
    }

    #[test]
    fn empty_value_and_empty_selector() {
        let sel = parse("tier=");
        assert!(sel.matches(&labels(&[("tier", "")])));
        assert!(!sel.matches(&labels(&[("tier", "web")])));
        let all = parse("  ");
        assert!(all.is_empty());
        assert!(all.matches(&labels(&[("a", "b")])));
        assert_eq!(all.to_string(), "");
    }

    #[test]
    fn canonical_form_parses_back_to_the_same_selector() {
        let sel = parse("b notin (y,x),a in (z),!c,d,e!=f,example.com/g=h");
        let again = parse(&sel.to_string());
        assert_eq!(sel, again);
        assert_eq!(
            sel.to_string(),
            "a in (z),b notin (x,y),!c,d,e!=f,example.com/g=h"
        );
    }

    #[test]
    fn errors_name_the_offending_part() {
        let err = |s: &str| LabelSelector::parse(s).unwrap_err();
        assert!(
            err("env in ()").contains("values set can't be empty"),
            "{}",
            err("env in ()")
        );
        assert!(err("env in (a").contains("missing ')'"));
        assert!(err("env in a").contains("expected '('"));
        assert!(err("a>3").contains("'>' is not supported"));
        assert!(err("a,").contains("after the last ','"));
        assert!(err(",a").contains("expected a label key"));
        assert!(err("!a=b").contains("'!a' must stand alone"));
        assert!(err("a=b c").contains("found \"c\""));
        assert!(err("bad key!=x").contains("found \"key\""));
        assert!(err("-a=b").contains("invalid label key \"-a\""));
        assert!(err("a=-b").contains("invalid label value \"-b\""));
        assert!(err("a=(b)").contains("found '('"));
    }

    #[test]
    fn from_meta_converts_labels_and_expressions() {
        let meta = metav1::LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), "kubia".to_string())])),
            match_expressions: Some(vec![
                metav1::LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: Some(vec!["prod".into(), "debug".into()]),
                },
                metav1::LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let sel = LabelSelector::from_meta(&meta).unwrap();
        assert_eq!(sel.to_string(), "app=kubia,!canary,env in (debug,prod)");
        assert!(sel.matches(&labels(&[("app", "kubia"), ("env", "prod")])));
        assert!(!sel.matches(&labels(&[
            ("app", "kubia"),
            ("env", "prod"),
            ("canary", "1")
        ])));
        assert!(
            LabelSelector::from_meta(&metav1::LabelSelector::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn from_meta_enforces_value_counts_and_operators() {
        let expr = |op: &str, values: Option<Vec<String>>| metav1::LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "env".into(),
                operator: op.into(),
                values,
            }]),
        };
        let e = LabelSelector::from_meta(&expr("In", None)).unwrap_err();
        assert!(e.contains("values set can't be empty"), "{e}");
        let e = LabelSelector::from_meta(&expr("Exists", Some(vec!["x".into()]))).unwrap_err();
        assert!(e.contains("values set must be empty"), "{e}");
        let e = LabelSelector::from_meta(&expr("Gt", Some(vec!["1".into()]))).unwrap_err();
        assert_eq!(e, "\"Gt\" is not a valid label selector operator");
    }

    #[test]
    fn gt_and_lt_requirements_still_match_numerically() {
        let r = Requirement::new("replicas", Operator::Gt, vec!["3".into()]).unwrap();
        assert!(r.matches(&labels(&[("replicas", "4")])));
        assert!(!r.matches(&labels(&[("replicas", "3")])));
        assert!(Requirement::new("replicas", Operator::Lt, vec!["x".into()]).is_err());
    }
}
