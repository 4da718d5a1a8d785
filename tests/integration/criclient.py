"""A small CRI (Kubernetes Container Runtime Interface, v1) client for the
tests, speaking gRPC to containerd's CRI plugin as kubelet does.

The interface is tests/integration/cri/api.proto (a subset of k8s.io/cri-api,
same package and field numbers).  It is compiled when this module is first
imported: grpc_tools' protoc writes a descriptor set into a temporary
directory and the message classes are made from it at run time, so nothing
generated is checked in and the generated code cannot disagree with the
installed protobuf library.  The calls go through grpcio's generic stubs.

    cri = criclient.CRI("/path/containerd.sock")
    sid = cri.runtime("RunPodSandbox", {"config": {...}, "runtime_handler": "runc"}).pod_sandbox_id

Requests are dicts in the proto's field names (json_format.ParseDict);
answers are the message objects.  Every call has a deadline.
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "cri", "api.proto")
PACKAGE = "runtime.v1"
CALL_TIMEOUT = 30

_MESSAGES = None
_SERVICES = None


def missing():
    """Why the client cannot run here, or None."""
    for mod in ("grpc", "google.protobuf", "grpc_tools"):
        try:
            __import__(mod)
        except ImportError:
            return "python module %s is missing (scripts/install-deps.sh: python3-grpcio, " \
                   "python3-protobuf, python3-grpc-tools)" % mod
    return None


def _compile():
    """Message classes and {service: {method: (request, response)}} from
    api.proto, through a descriptor set made by protoc."""
    from google.protobuf import descriptor_pb2, message_factory
    d = tempfile.mkdtemp(prefix="cri-proto-")
    try:
        out = os.path.join(d, "api.desc")
        r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I" + os.path.dirname(PROTO),
                            "--descriptor_set_out=" + out, PROTO], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("protoc failed on %s: %s" % (PROTO, r.stderr))
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            fds.ParseFromString(f.read())
    finally:
        shutil.rmtree(d)
    messages = message_factory.GetMessages(list(fds.file))
    services = {}
    for fdp in fds.file:
        for svc in fdp.service:
            services[svc.name] = {m.name: (m.input_type.lstrip("."), m.output_type.lstrip("."))
                                  for m in svc.method}
    return messages, services


def _load():
    global _MESSAGES, _SERVICES
    if _MESSAGES is None:
        _MESSAGES, _SERVICES = _compile()
    return _MESSAGES, _SERVICES


def message(name, fields=None):
    """A runtime.v1 message `name` filled from the dict `fields`."""
    from google.protobuf import json_format
    msgs, _ = _load()
    m = msgs[PACKAGE + "." + name]()
    if fields:
        json_format.ParseDict(fields, m)
    return m


def to_dict(m):
    from google.protobuf import json_format
    return json_format.MessageToDict(m, preserving_proto_field_name=True)


class CRIError(AssertionError):
    """A CRI call that failed: the method, the gRPC code and details."""

    def __init__(self, method, code, details):
        super().__init__("%s: %s: %s" % (method, code, details))
        self.method, self.code, self.details = method, code, details


class CRI:
    """RuntimeService and ImageService on containerd's socket."""

    def __init__(self, sock, timeout=CALL_TIMEOUT):
        import grpc
        self.timeout = timeout
        self.channel = grpc.insecure_channel("unix://" + sock)
        self._stubs = {}

    def _stub(self, service, method):
        key = (service, method)
        if key not in self._stubs:
            msgs, services = _load()
            req, resp = services[service][method]
            self._stubs[key] = self.channel.unary_unary(
                "/%s.%s/%s" % (PACKAGE, service, method),
                request_serializer=msgs[req].SerializeToString,
                response_deserializer=msgs[resp].FromString)
        return self._stubs[key]

    def call(self, service, method, fields=None, timeout=None):
        import grpc
        _, services = _load()
        req = message(services[service][method][0][len(PACKAGE) + 1:], fields)
        try:
            return self._stub(service, method)(req, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise CRIError(method, e.code(), e.details()) from None

    def runtime(self, method, fields=None, timeout=None):
        return self.call("RuntimeService", method, fields, timeout)

    def image(self, method, fields=None, timeout=None):
        return self.call("ImageService", method, fields, timeout)

    def remove_pod(self, sid):
        """Teardown: StopPodSandbox then RemovePodSandbox, each error
        ignored (the pod may be half made, or gone already)."""
        for m in ("StopPodSandbox", "RemovePodSandbox"):
            try:
                self.runtime(m, {"pod_sandbox_id": sid})
            except CRIError:
                pass

    def close(self):
        self.channel.close()
