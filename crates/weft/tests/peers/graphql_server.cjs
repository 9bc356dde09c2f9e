// A real GraphQL server for weft's end-to-end tests, built with GraphQL Yoga and graphql-js.
// Serves /graphql on 127.0.0.1:PORT (first argument; 0 picks one) and prints `listening PORT`.
// `items` is a Relay-style connection over seven items; `addItem` refuses an empty name with a
// GraphQL error in a 200 answer.
const { createServer } = require('node:http');
const { GraphQLError } = require('graphql');
const { createSchema, createYoga } = require('graphql-yoga');

const items = Array.from({ length: 7 }, (_, i) => ({ id: String(i + 1), name: `item-${i + 1}` }));
const added = [];

const schema = createSchema({
  typeDefs: `
    type Item { id: ID!, name: String! }
    type ItemEdge { cursor: String!, node: Item! }
    type PageInfo { hasNextPage: Boolean!, endCursor: String }
    type ItemConnection { edges: [ItemEdge!]!, pageInfo: PageInfo! }
    input NewItem { name: String! }
    type Query { items(first: Int!, after: String): ItemConnection!, added: [Item!]! }
    type Mutation { addItem(input: NewItem!): Item! }
  `,
  resolvers: {
    Query: {
      items: (_, { first, after }) => {
        const start = after ? Number(after) : 0;
        const page = items.slice(start, start + first);
        return {
          edges: page.map((node, i) => ({ cursor: String(start + i + 1), node })),
          pageInfo: {
            hasNextPage: start + page.length < items.length,
            endCursor: page.length ? String(start + page.length) : null,
          },
        };
      },
      added: () => added,
    },
    Mutation: {
      addItem: (_, { input }) => {
        if (!input.name.trim()) {
          throw new GraphQLError('name must not be empty', { extensions: { code: 'BAD_USER_INPUT' } });
        }
        const item = { id: `new-${added.length + 1}`, name: input.name };
        added.push(item);
        return item;
      },
    },
  },
});

const server = createServer(createYoga({ schema, graphiql: false, logging: false }));
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
