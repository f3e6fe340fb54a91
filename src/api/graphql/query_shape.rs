//! Limits on the shape of a query, judged on the parsed document before it
//! is validated or run: how many selections it makes (every alias and
//! `__typename` counts, fragments counted where they are spread), how deep
//! its ordinary fields nest, and how far introspection may expand. Schema
//! introspection (`__schema`, `__type`) is answered to API keys only.
//!
//! async-graphql's own `limit_complexity` skips `__typename`, and its depth
//! limit counts introspection, whose standard queries nest 15 levels deep;
//! this one judges both as docs/api.md describes.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Positioned, Request, ServerError, ServerResult};

use super::Caller;

/// At most this many selections per document.
pub const MAX_SELECTIONS: usize = 2_000;
/// At most this many levels of ordinary (non-introspection) fields.
pub const MAX_DEPTH: usize = 12;
/// At most this many levels under `__schema` or `__type`; the standard
/// introspection queries of graphql-js and graphql-core need 15.
pub const MAX_INTROSPECTION_DEPTH: usize = 20;
/// At most this many type-expanding lists (`fields`, `inputFields`,
/// `interfaces`, `possibleTypes`) on one path under introspection, as
/// graphql-js's `MaxIntrospectionDepthRule`: each multiplies the answer.
pub const MAX_INTROSPECTION_EXPANSIONS: usize = 2;

pub struct QueryShape;

impl ExtensionFactory for QueryShape {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryShapeExtension)
    }
}

struct QueryShapeExtension;

#[async_graphql::async_trait::async_trait]
impl Extension for QueryShapeExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // Parsed once here and kept for execution; a query that does not
        // parse is left to async-graphql to report.
        let shape = match request.parsed_query() {
            Ok(document) => Some(measure(document).map_err(|refusal| refusal.error())?),
            Err(_) => None,
        };
        if shape.is_some_and(|shape| shape.introspects) {
            let keyed = request
                .data
                .get(&std::any::TypeId::of::<Caller>())
                .and_then(|caller| caller.downcast_ref::<Caller>())
                .or_else(|| ctx.data_opt::<Caller>())
                .is_some_and(|caller| caller.0.is_some());
            if !keyed {
                return Err(unauthenticated_introspection());
            }
        }
        next.run(ctx, request).await
    }
}

/// What a document asks for, once it is within the limits.
#[derive(Debug, Default, PartialEq)]
pub struct Shape {
    /// It selects `__schema` or `__type`.
    pub introspects: bool,
}

#[derive(Debug, PartialEq)]
pub enum Refusal {
    TooComplex,
    TooDeep,
    IntrospectionTooDeep,
}

impl Refusal {
    fn error(&self) -> ServerError {
        let message = match self {
            Refusal::TooComplex => format!(
                "Query is too complex: at most {MAX_SELECTIONS} selections \
                 (fields, aliases and fragments, counted where they are used)"
            ),
            Refusal::TooDeep => {
                format!("Query is nested too deep: at most {MAX_DEPTH} levels of fields")
            }
            Refusal::IntrospectionTooDeep => format!(
                "Introspection is nested too deep: at most {MAX_INTROSPECTION_DEPTH} levels, \
                 and {MAX_INTROSPECTION_EXPANSIONS} of fields, inputFields, interfaces or \
                 possibleTypes on one path"
            ),
        };
        with_code(ServerError::new(message, None), "VALIDATION")
    }
}

fn unauthenticated_introspection() -> ServerError {
    with_code(
        ServerError::new(
            "introspection (__schema, __type) needs an API key; the schema is also \
             published as schema.graphql",
            None,
        ),
        "UNAUTHENTICATED",
    )
}

fn with_code(mut error: ServerError, code: &str) -> ServerError {
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
}

/// Measures every operation of `document`, fragments expanded where spread.
/// The walk stops as soon as a limit is passed, so its work is bounded by
/// the limits, not by how often fragments spread one another.
pub fn measure(document: &ExecutableDocument) -> Result<Shape, Refusal> {
    let mut walk = Walk {
        document,
        shape: Shape::default(),
        selections: 0,
        spreading: HashSet::new(),
    };
    for (_, operation) in document.operations.iter() {
        walk.selection_set(&operation.node.selection_set, Level::Ordinary(0))?;
    }
    Ok(walk.shape)
}

#[derive(Clone, Copy)]
enum Level {
    /// Fields above, outside introspection.
    Ordinary(usize),
    /// Fields above within `__schema`/`__type`, and type-expanding lists among them.
    Introspection { depth: usize, expansions: usize },
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    shape: Shape,
    selections: usize,
    /// Fragments being expanded: a cycle is left for validation to report.
    spreading: HashSet<&'a str>,
}

impl<'a> Walk<'a> {
    fn selection_set(
        &mut self,
        set: &'a Positioned<SelectionSet>,
        level: Level,
    ) -> Result<(), Refusal> {
        for selection in &set.node.items {
            self.selections += 1;
            if self.selections > MAX_SELECTIONS {
                return Err(Refusal::TooComplex);
            }
            match &selection.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    let level = self.enter(name, level)?;
                    self.selection_set(&field.node.selection_set, level)?;
                }
                Selection::InlineFragment(fragment) => {
                    self.selection_set(&fragment.node.selection_set, level)?;
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    let Some(fragment) = self.document.fragments.get(name) else {
                        continue;
                    };
                    if !self.spreading.insert(name) {
                        continue;
                    }
                    self.selection_set(&fragment.node.selection_set, level)?;
                    self.spreading.remove(name);
                }
            }
        }
        Ok(())
    }

    /// The level below field `name`, or why it may not go there.
    fn enter(&mut self, name: &str, level: Level) -> Result<Level, Refusal> {
        let level = match level {
            Level::Ordinary(_) if matches!(name, "__schema" | "__type") => {
                self.shape.introspects = true;
                Level::Introspection {
                    depth: 0,
                    expansions: 0,
                }
            }
            Level::Ordinary(depth) => Level::Ordinary(depth + 1),
            Level::Introspection { depth, expansions } => Level::Introspection {
                depth: depth + 1,
                expansions: expansions
                    + usize::from(matches!(
                        name,
                        "fields" | "inputFields" | "interfaces" | "possibleTypes"
                    )),
            },
        };
        match level {
            Level::Ordinary(depth) if depth > MAX_DEPTH => Err(Refusal::TooDeep),
            Level::Introspection { depth, expansions }
                if depth > MAX_INTROSPECTION_DEPTH || expansions > MAX_INTROSPECTION_EXPANSIONS =>
            {
                Err(Refusal::IntrospectionTooDeep)
            }
            level => Ok(level),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(query: &str) -> Result<Shape, Refusal> {
        measure(&async_graphql::parser::parse_query(query).expect("a query that parses"))
    }

    fn nested(levels: usize) -> String {
        "a { ".repeat(levels - 1) + "b" + &" }".repeat(levels - 1)
    }

    fn aliases(count: usize) -> String {
        (0..count).map(|i| format!("a{i}: __typename ")).collect()
    }

    #[test]
    fn every_alias_and_typename_counts_as_a_selection() {
        let at_limit = format!("{{ {} }}", aliases(MAX_SELECTIONS));
        assert_eq!(shape(&at_limit), Ok(Shape::default()));
        let past = format!("{{ {} one_more: __typename }}", aliases(MAX_SELECTIONS));
        assert_eq!(shape(&past), Err(Refusal::TooComplex));
    }

    #[test]
    fn fragments_count_where_they_are_spread_and_a_bomb_stops_early() {
        // Two spreads of a fragment of half the limit pass it (2 + 2 × 1,000).
        let half = format!("fragment F on Query {{ {} }}", aliases(MAX_SELECTIONS / 2));
        assert_eq!(shape(&format!("{{ ...F }} {half}")), Ok(Shape::default()));
        assert_eq!(
            shape(&format!("{{ ...F ...F }} {half}")),
            Err(Refusal::TooComplex)
        );
        // Each fragment spreads the next twice: 2^30 selections once expanded.
        let mut bomb = String::from("{ ...F0 }\n");
        for i in 0..30 {
            bomb += &format!("fragment F{i} on Query {{ ...F{n} ...F{n} }}\n", n = i + 1);
        }
        bomb += "fragment F30 on Query { __typename }";
        assert_eq!(shape(&bomb), Err(Refusal::TooComplex));
        // A cycle is left for validation to report.
        assert_eq!(
            shape("{ ...A } fragment A on Query { ...A b }"),
            Ok(Shape::default())
        );
    }

    #[test]
    fn ordinary_fields_nest_at_most_twelve_levels() {
        assert_eq!(
            shape(&format!("{{ {} }}", nested(MAX_DEPTH))),
            Ok(Shape::default())
        );
        assert_eq!(
            shape(&format!("{{ {} }}", nested(MAX_DEPTH + 1))),
            Err(Refusal::TooDeep)
        );
    }

    #[test]
    fn introspection_nests_deeper_but_expands_types_at_most_twice() {
        let introspects = Ok(Shape { introspects: true });
        let deep = format!("{{ __schema {{ {} }} }}", nested(MAX_INTROSPECTION_DEPTH));
        assert_eq!(shape(&deep), introspects);
        let deeper = format!(
            "{{ __schema {{ {} }} }}",
            nested(MAX_INTROSPECTION_DEPTH + 1)
        );
        assert_eq!(shape(&deeper), Err(Refusal::IntrospectionTooDeep));
        let twice = "{ __type(name: \"Query\") { fields { type { fields { name } } } } }";
        assert_eq!(shape(twice), introspects);
        let thrice = "{ __type(name: \"Query\") { fields { type { fields { type { \
                      fields { name } } } } } } }";
        assert_eq!(shape(thrice), Err(Refusal::IntrospectionTooDeep));
    }
}
