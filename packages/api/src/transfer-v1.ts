// containerd.services.transfer.v1 and the containerd.types.transfer messages it carries in
// its Any fields (ImageStore, ImageImportStream, Progress, Data, WindowUpdate, ...).
export * from "./gen/containerd/services/transfer/v1/transfer_pb.js";
export * from "./gen/containerd/types/transfer/imagestore_pb.js";
export * from "./gen/containerd/types/transfer/importexport_pb.js";
export * from "./gen/containerd/types/transfer/progress_pb.js";
export * from "./gen/containerd/types/transfer/registry_pb.js";
export * from "./gen/containerd/types/transfer/streaming_pb.js";
