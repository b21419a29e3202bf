// The cluster recipes offline: the Kubernetes manifests of deploy/k8s parsed (npm yaml) and their
// required fields checked (an Indexed Job whose pods take their shard from JOB_COMPLETION_INDEX, a
// merge Job, a shared volume for outputs and the model cache, the run's arguments accepted by the
// pipeline); the scripts' syntax; and how a process is pinned to one GPU (deploy/gpu-env.sh): the
// PCI tag it gives Mesa's device-select layer, that layer taking part in this tool's Vulkan
// enumeration, and no silent fallback to a GL adapter once the backend is pinned to Vulkan.
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { assert, assertEquals } from "./assert.ts";
import { describe, FIXTURE, pipeline } from "./pipeline_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const K8S = join(ROOT, "deploy", "k8s");

// deno-lint-ignore no-explicit-any
type Doc = any;

async function manifest(file: string): Promise<Doc> {
  const docs = parseAllDocuments(await Deno.readTextFile(join(K8S, file)));
  assertEquals(docs.length, 1, `${file}: one document`);
  const d = docs[0];
  assertEquals(d.errors.map((e) => e.message), [], `${file}: YAML errors`);
  return d.toJS();
}

async function bash(script: string, env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command("bash", { args: ["-c", script], cwd: ROOT, env, stdout: "piped", stderr: "piped" }).output();
  return { code: r.code, out: new TextDecoder().decode(r.stdout), err: new TextDecoder().decode(r.stderr) };
}

/** A Job's one container, and the checks every Job of the run shares. */
function checkJob(file: string, job: Doc, claim: string, args: Doc): Doc {
  assertEquals([job.apiVersion, job.kind], ["batch/v1", "Job"], file);
  assert(typeof job.metadata?.name === "string", `${file}: metadata.name`);
  const pod = job.spec?.template?.spec;
  assertEquals(pod?.restartPolicy, "Never", `${file}: a failed pod is retried by the Job, not restarted in place`);
  assertEquals(pod.containers.length, 1, file);
  const c = pod.containers[0];
  assert(typeof c.image === "string" && c.image !== "", `${file}: image`);
  assertEquals(c.workingDir, "/app", `${file}: the repository in the image (deploy/k8s/Dockerfile)`);
  const vol = pod.volumes.find((v: Doc) => v.persistentVolumeClaim);
  assertEquals(vol?.persistentVolumeClaim.claimName, claim, `${file}: the run's volume`);
  const mount = c.volumeMounts.find((m: Doc) => m.name === vol.name);
  assertEquals(mount?.mountPath, "/data", file);
  const env = Object.fromEntries(c.env.map((e: Doc) => [e.name, e.value ?? e.valueFrom]));
  assertEquals(env.HF_HUB_CACHE, "/data/hf/hub", `${file}: the model cache on the shared volume`);
  assertEquals(env.PIPELINE_ARGS?.configMapKeyRef, { name: args.metadata.name, key: "args" }, `${file}: the run's arguments`);
  assert(c.command.join(" ").includes('eval "set -- $PIPELINE_ARGS"'), `${file}: the arguments as shell words`);
  return { c, env };
}

Deno.test("deploy/k8s: the manifests parse and hold what a sharded run needs", async () => {
  const args = await manifest("config.yaml");
  assertEquals([args.apiVersion, args.kind], ["v1", "ConfigMap"]);
  const pvc = await manifest("pvc.yaml");
  assertEquals([pvc.apiVersion, pvc.kind], ["v1", "PersistentVolumeClaim"]);
  assert(pvc.spec.accessModes.includes("ReadWriteMany"), "the shards on several nodes write to one volume");
  assert(/^\d+(Gi|Ti)$/.test(pvc.spec.resources.requests.storage), "a size");
  const claim = pvc.metadata.name;

  const shards = await manifest("shards.yaml");
  const s = checkJob("shards.yaml", shards, claim, args);
  assertEquals(shards.spec.completionMode, "Indexed");
  assert(Number.isInteger(shards.spec.completions) && shards.spec.completions >= 1, "completions");
  assertEquals(Number(s.env.SHARDS), shards.spec.completions, "SHARDS = completions: shard I of N with N the number of pods");
  assert(shards.spec.parallelism <= shards.spec.completions, "parallelism");
  assert(s.c.command.join(" ").includes('--shard "$JOB_COMPLETION_INDEX/$SHARDS"'), "the shard from JOB_COMPLETION_INDEX");
  assertEquals(s.c.resources.limits["nvidia.com/gpu"], 1, "one GPU per shard");
  assertEquals(s.env.DENO_WEBGPU_BACKEND, "vulkan");
  assert(String(s.env.NVIDIA_DRIVER_CAPABILITIES).split(",").includes("graphics"), "the NVIDIA toolkit mounts Vulkan only with graphics");

  const merge = await manifest("merge.yaml");
  const m = checkJob("merge.yaml", merge, claim, args);
  assert(m.c.command.join(" ").includes("--merge"), "merge.yaml merges");
  assert(!("completionMode" in merge.spec), "the merge is one pod");
  assertEquals(m.c.image, s.c.image, "one image for the run");

  const fetch = await manifest("fetch-model.yaml");
  const f = checkJob("fetch-model.yaml", fetch, claim, args);
  assert(f.c.command.join(" ").includes("deploy/fetch_model.ts"), "the model fetched once, before the shards");

  // the ConfigMap's arguments, split as the pods' bash splits them, are accepted by the pipeline
  // (a dry run: nothing is written, the study's model need not be downloaded)
  const words = await bash(`eval "set -- $A"; printf '%s\\0' "$@"`, { A: args.data.args });
  assertEquals(words.code, 0, words.err);
  const argv = words.out.split("\0").slice(0, -1);
  assert(argv.includes("--out") && argv[argv.indexOf("--out") + 1].startsWith("/data/"), "the run folder on the volume");
  const dry = await pipeline([...argv, "--shard", `0/${shards.spec.completions}`, "--dry-run"]);
  assertEquals(dry.code, 0, describe(dry));
  assert(dry.stdout.includes("run folder: /data/outputs/"), describe(dry));
});

Deno.test("deploy scripts: valid bash", async () => {
  for (const f of ["deploy/gpu-env.sh", "deploy/slurm/submit.sh", "deploy/slurm/shard.sbatch", "deploy/slurm/merge.sbatch", "deploy/k8s/run.sh", "deploy/check_node.sh"]) {
    const r = await bash(`bash -n ${f}`);
    assertEquals(r.code, 0, `${f}: ${r.err}`);
  }
  const usage = await bash("deploy/slurm/submit.sh");
  assertEquals(usage.code, 2, "submit.sh without N");
  assert(usage.err.includes("usage: deploy/slurm/submit.sh N"), usage.err);
});

Deno.test("deploy/gpu-env.sh: the Vulkan backend pinned, the scheduler's GPU as a PCI tag for Mesa's device-select layer", async () => {
  const tags = await bash(". deploy/gpu-env.sh; for b in 00000000:41:00.0 0000:C1:00.1 00000001:0a:1f.7 41:00.0; do mamba_explain_pci_tag $b || echo refused; done");
  assertEquals(tags.out.trim().split("\n"), ["pci-0000_41_00_0", "pci-0000_c1_00_1", "pci-0001_0a_1f_7", "refused"], tags.err);
  // without nvidia-smi (this machine) the device choice is left alone; the backend is pinned
  const env = await bash(`PATH=/usr/bin:/bin; . deploy/gpu-env.sh; echo "$DENO_WEBGPU_BACKEND|\${DRI_PRIME-unset}"`, { CUDA_VISIBLE_DEVICES: "1" });
  assertEquals(env.out.trim(), "vulkan|unset", env.err);
  const kept = await bash(`. deploy/gpu-env.sh; echo "$DENO_WEBGPU_BACKEND"`, { DENO_WEBGPU_BACKEND: "metal" });
  assertEquals(kept.out.trim(), "metal", "a backend set by the user is kept");
});

const LAYER = "/usr/share/vulkan/implicit_layer.d/VkLayer_MESA_device_select.json";
const hasLayer = await Deno.stat(LAYER).then(() => true, () => false);
if (!hasLayer) console.log(`deploy_test: the device-select check is skipped: ${LAYER} is not installed (Debian: mesa-vulkan-drivers)`);

Deno.test({
  name: "GPU choice: Mesa's device-select layer sees this tool's Vulkan devices; pinned to Vulkan, no driver is an error, not a GL fallback",
  ignore: !hasLayer,
  fn: async () => {
    const infer = (env: Record<string, string>) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "engine/infer.ts", "--model", FIXTURE, "--ids", "1,2"],
        cwd: ROOT,
        env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1", ...env },
        stdout: "piped",
        stderr: "piped",
      }).output();
    const dec = (b: Uint8Array) => new TextDecoder().decode(b);
    // the layer lists the devices it chooses among (with their PCI addresses where drivers give them) and ends the process
    const list = await infer({ MESA_VK_DEVICE_SELECT: "list" });
    assert(/selectable devices:\n\s+GPU 0: [0-9a-f]+:[0-9a-f]+ "/.test(dec(list.stderr)), dec(list.stderr));
    assertEquals(dec(list.stdout), "", "the layer ended the process while listing");
    // DENO_WEBGPU_BACKEND=vulkan with no Vulkan driver: the one-line error, never a CPU GL adapter
    const none = await infer({ DENO_WEBGPU_BACKEND: "vulkan", VK_DRIVER_FILES: "/nonexistent/icd.json", VK_ICD_FILENAMES: "/nonexistent/icd.json" });
    assert(none.code !== 0, dec(none.stdout));
    assert(/^error: no WebGPU adapter found/.test(dec(none.stderr)), dec(none.stderr));
  },
});
