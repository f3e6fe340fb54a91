// Herald's GraphiQL. React, ReactDOM and GraphiQL are the globals of the
// vendored UMD builds the page loads before this script; the page's CSP
// allows no inline script, hence this file.
const graphqlUrl = new URL("/graphql", window.location.origin);
const subscriptionUrl = new URL("/graphql/ws", window.location.origin);
subscriptionUrl.protocol = graphqlUrl.protocol === "https:" ? "wss:" : "ws:";

ReactDOM.createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQL, {
    fetcher: GraphiQL.createFetcher({
      url: graphqlUrl.toString(),
      subscriptionUrl: subscriptionUrl.toString(),
    }),
    defaultEditorToolsVisibility: true,
  }),
);
