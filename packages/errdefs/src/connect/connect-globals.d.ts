// @connectrpc/connect's declarations use the DOM type `HeadersInit`, which @types/node does not
// declare globally (it declares `Headers` only). Without the DOM lib, name it here.
type HeadersInit = ConstructorParameters<typeof Headers>[0];
