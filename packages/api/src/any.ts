import { create, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { type Any, AnySchema } from "@bufbuild/protobuf/wkt";

/**
 * Packs a message into a `google.protobuf.Any` whose `type_url` is the bare full name of the
 * message (`containerd.types.transfer.ImageStore`), the form containerd's Transfer and
 * Streaming services accept. (`anyPack` from `@bufbuild/protobuf/wkt` prefixes
 * `type.googleapis.com/`, which containerd rejects.) Unpack with `anyUnpack` or `anyIs` from
 * `@bufbuild/protobuf/wkt`: they accept both forms.
 */
export function packAny<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): Any {
  return create(AnySchema, { typeUrl: schema.typeName, value: toBinary(schema, message) });
}
