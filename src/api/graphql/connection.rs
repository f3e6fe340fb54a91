//! One connection shape for every list: `<Node>Connection` of `<Node>Edge`s
//! and a `PageInfo`, each named after its node type.

use std::borrow::Cow;
use std::convert::Infallible;

use async_graphql::{OutputType, SimpleObject, TypeName};

use crate::api::cursor::{self, Cursor};

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name_type)]
pub struct Edge<N: OutputType> {
    pub cursor: String,
    pub node: N,
}

impl<N: OutputType> TypeName for Edge<N> {
    fn type_name() -> Cow<'static, str> {
        format!("{}Edge", N::type_name()).into()
    }
}

#[derive(SimpleObject)]
#[graphql(name_type)]
pub struct Connection<N: OutputType> {
    pub edges: Vec<Edge<N>>,
    pub page_info: PageInfo,
}

impl<N: OutputType> TypeName for Connection<N> {
    fn type_name() -> Cow<'static, str> {
        format!("{}Connection", N::type_name()).into()
    }
}

impl<N: OutputType> Connection<N> {
    /// `rows` and whether a next page follows them, as the read models'
    /// pages come: each row's cursor from its `key`, and its node. A row
    /// whose node is `None` is left out, but its cursor may still end the
    /// page, so the next one starts after it.
    pub fn page<R, C: Cursor, T: Into<Option<N>>>(
        rows: (Vec<R>, bool),
        key: impl Fn(&R) -> C,
        mut node: impl FnMut(R) -> T,
    ) -> Self {
        let Ok(page) = Self::try_page(rows, key, |row| Ok::<_, Infallible>(node(row)));
        page
    }

    /// As [`Connection::page`], for rows that may fail to make a node.
    pub fn try_page<R, C: Cursor, T: Into<Option<N>>, E>(
        (rows, has_next_page): (Vec<R>, bool),
        key: impl Fn(&R) -> C,
        mut node: impl FnMut(R) -> Result<T, E>,
    ) -> Result<Self, E> {
        let end_cursor = rows.last().map(|row| cursor::encode(&key(row)));
        let mut edges = Vec::with_capacity(rows.len());
        for row in rows {
            let cursor = cursor::encode(&key(&row));
            if let Some(node) = node(row)?.into() {
                edges.push(Edge { cursor, node });
            }
        }
        Ok(Connection {
            edges,
            page_info: PageInfo {
                has_next_page,
                end_cursor,
            },
        })
    }
}
