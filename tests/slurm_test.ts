// The Slurm recipe, for real: a one-node Slurm cluster (munged, slurmctld, slurmd; a minimal
// slurm.conf, no cgroups, state in a temp folder, three GPUs declared on stand-in device nodes so
// that the recipe's --gres=gpu:1 is honoured) runs deploy/slurm/submit.sh: 3 shards of 01_construct
// on the test model, the merge, 3 shards of 03_info_flow and 04_heatmap, the final merge. The
// outputs must equal a one-process run byte for byte. Every daemon started here is stopped, also
// on failure. Skipped, with a message, only where the Slurm and munge programs are not installed
// (.ci/run installs them: apt-get install slurmctld slurmd munge).
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { describe, FIXTURE, pipeline } from "./pipeline_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const PROGRAMS = ["munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "sinfo", "scancel"];
const SHARDS = 3;
/** 12 prompts: 6 batches of 01, 6 groups of 03, 2 groups of 04 (so the third 04 shard is empty). */
const RUN_ARGS = [
  "--model", FIXTURE, "--rows", "0-11",
  "--set", "01_construct.batchSize=2",
  "--set", "03_info_flow.filter=all", "--set", "03_info_flow.k=3", "--set", "03_info_flow.group_prompts=2", "--set", "03_info_flow.bootstrap=50",
  "--set", "04_heatmap.filter=all", "--set", "04_heatmap.k=3", "--set", "04_heatmap.group_prompts=2", "--heatmap-prompts", "0-3",
];
const STAGES = ["01_construct", "02_compare", "03_info_flow", "04_heatmap"];

function findProgram(name: string): string | undefined {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/sbin", "/sbin", "/usr/bin"];
  for (const d of dirs) {
    try {
      if (d && Deno.statSync(join(d, name)).isFile) return join(d, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

const missing = PROGRAMS.filter((p) => !findProgram(p));
if (missing.length) {
  console.log(`slurm_test: SKIPPED: ${missing.join(", ")} not installed (Debian: apt-get install slurmctld slurmd munge; .ci/run installs them)`);
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function run(cmd: string, args: string[], env: Record<string, string>, cwd = ROOT): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(findProgram(cmd) ?? cmd, { args, env, cwd, stdout: "piped", stderr: "piped" }).output();
  return { code: r.code, out: new TextDecoder().decode(r.stdout), err: new TextDecoder().decode(r.stderr) };
}

/** A one-node Slurm cluster in a temp folder; `stop` ends every process it started. */
class MiniSlurm {
  readonly procs: { name: string; child: Deno.ChildProcess }[] = [];
  readonly env: Record<string, string>;
  constructor(readonly dir: string) {
    this.env = { SLURM_CONF: join(dir, "slurm.conf") };
  }

  async start(): Promise<void> {
    const d = this.dir;
    const host = Deno.hostname().split(".")[0];
    await Deno.chmod(d, 0o755);
    for (const sub of ["state", "spool", "logs"]) await Deno.mkdir(join(d, sub));
    const key = new Uint8Array(1024);
    crypto.getRandomValues(key);
    await Deno.writeFile(join(d, "munge.key"), key, { mode: 0o400 });
    // three stand-in "GPUs" (character devices 1:3, like /dev/null): Slurm counts and hands them out;
    // without cgroups nothing is restricted, each task just gets its own CUDA_VISIBLE_DEVICES
    for (let i = 0; i < 3; i++) {
      const r = await run("mknod", [join(d, `gpu${i}`), "c", "1", "3"], {});
      assertEquals(r.code, 0, `mknod: ${r.err}`);
    }
    const conf = [
      "ClusterName=mxtest",
      `SlurmctldHost=${host}(127.0.0.1)`,
      "SlurmUser=root",
      "SlurmdUser=root",
      "AuthType=auth/munge",
      `AuthInfo=socket=${d}/munge.sock`,
      "CredType=cred/munge",
      "MpiDefault=none",
      "ProctrackType=proctrack/linuxproc",
      "TaskPlugin=task/none",
      "JobAcctGatherType=jobacct_gather/none",
      "AccountingStorageType=accounting_storage/none",
      "JobCompType=jobcomp/none",
      "SchedulerType=sched/builtin",
      "SelectType=select/cons_tres",
      "SelectTypeParameters=CR_Core",
      `SlurmctldPort=${freePort()}`,
      `SlurmdPort=${freePort()}`,
      `StateSaveLocation=${d}/state`,
      `SlurmdSpoolDir=${d}/spool`,
      `SlurmctldPidFile=${d}/slurmctld.pid`,
      `SlurmdPidFile=${d}/slurmd.pid`,
      `SlurmctldLogFile=${d}/logs/slurmctld.log`,
      `SlurmdLogFile=${d}/logs/slurmd.log`,
      "SlurmdParameters=config_overrides", // the node below claims more CPUs and memory than the test machine has
      "ReturnToService=2",
      "MinJobAge=600",
      "GresTypes=gpu",
      // the recipe asks 4 CPUs and 32 GB per task: room for the three shards at once
      `NodeName=${host} NodeAddr=127.0.0.1 CPUs=12 RealMemory=131072 Gres=gpu:3 State=UNKNOWN`,
      `PartitionName=test Nodes=${host} Default=YES MaxTime=INFINITE State=UP`,
    ];
    await Deno.writeTextFile(join(d, "slurm.conf"), conf.join("\n") + "\n");
    await Deno.writeTextFile(join(d, "gres.conf"), `NodeName=${host} Name=gpu File=${d}/gpu[0-2]\n`);
    const spawn = (name: string, args: string[]) => {
      const child = new Deno.Command(findProgram(name)!, { args, env: this.env, stdin: "null", stdout: "null", stderr: "null" }).spawn();
      this.procs.push({ name, child });
    };
    spawn("munged", ["-F", `--key-file=${d}/munge.key`, `--socket=${d}/munge.sock`, `--pid-file=${d}/munged.pid`, `--log-file=${d}/logs/munged.log`, `--seed-file=${d}/munged.seed`]);
    await this.until("munged's socket", async () => (await Deno.stat(join(d, "munge.sock")).then(() => true, () => false)), 20);
    spawn("slurmctld", ["-D", "-i", "-f", join(d, "slurm.conf")]);
    spawn("slurmd", ["-D", "-f", join(d, "slurm.conf")]);
    await this.until("the node to be idle", async () => (await run("sinfo", ["-h", "-o", "%t"], this.env)).out.trim() === "idle", 60);
  }

  async until(what: string, ok: () => Promise<boolean>, seconds: number): Promise<void> {
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end) {
      for (const p of this.procs) {
        // a daemon that exited early: its log says why
        const status = await Promise.race([p.child.status, new Promise<null>((r) => setTimeout(() => r(null), 0))]);
        if (status) throw new Error(`${p.name} exited (${status.code}) while waiting for ${what}\n${await this.logs()}`);
      }
      if (await ok()) return;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`timed out after ${seconds} s waiting for ${what}\n${await this.logs()}`);
  }

  async logs(): Promise<string> {
    const out: string[] = [];
    for await (const e of Deno.readDir(join(this.dir, "logs"))) {
      const text = await Deno.readTextFile(join(this.dir, "logs", e.name)).catch(() => "");
      out.push(`--- ${e.name}\n${text.split("\n").slice(-40).join("\n")}`);
    }
    return out.join("\n");
  }

  /** Cancel every job (and wait for their processes to end), then stop the daemons, newest first. */
  async stop(): Promise<void> {
    if (this.procs.some((p) => p.name === "slurmctld")) {
      await run("scancel", ["--full", "--partition=test"], this.env).catch(() => {});
      const end = Date.now() + 30_000;
      while (Date.now() < end && (await run("squeue", ["-h"], this.env).catch(() => ({ out: "" }))).out.trim() !== "") {
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    for (const p of [...this.procs].reverse()) {
      try {
        p.child.kill("SIGTERM");
      } catch {
        // already gone
      }
      const timer = setTimeout(() => {
        try {
          p.child.kill("SIGKILL");
        } catch {
          // already gone
        }
      }, 10_000);
      await p.child.status;
      clearTimeout(timer);
    }
  }
}

type JobState = { state: string; reason: string };
async function jobState(id: string, env: Record<string, string>): Promise<JobState[]> {
  const r = await run("scontrol", ["show", "job", "-o", id], env);
  return r.out.trim().split("\n").filter((l) => l).map((l) => ({
    state: /JobState=(\S+)/.exec(l)?.[1] ?? "?",
    reason: /Reason=(\S+)/.exec(l)?.[1] ?? "",
  }));
}

async function filesOf(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.isDirectory ? `${e.name}/` : e.name);
  return out.sort();
}

Deno.test({
  name: "Slurm: the recipe's array of 3 shards and its merge jobs reproduce a one-process run byte for byte",
  ignore: missing.length > 0,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    assertEquals(Deno.uid(), 0, "slurmd and munged run as root here (CI runs as root)");
    const tmp = await Deno.makeTempDir({ prefix: "slurm_test_" });
    await Deno.chmod(tmp, 0o755); // munged wants every folder above its socket reachable by every user
    const cluster = new MiniSlurm(join(tmp, "cluster"));
    await Deno.mkdir(cluster.dir);
    const sharded = join(tmp, "sharded"), whole = join(tmp, "whole");
    try {
      await cluster.start();
      const env = {
        ...cluster.env,
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        HOME: Deno.env.get("HOME") ?? "/root",
        XDG_RUNTIME_DIR: "/tmp",
        NO_COLOR: "1",
        DENO: Deno.execPath(), // the jobs run this Deno (no npx on the way)
        HF_HUB_CACHE: join(tmp, "hf-hub"), // the model cache the jobs share (the test model is a local folder)
        SBATCH_OUTPUT: join(cluster.dir, "logs", "job-%x-%j.out"),
      };
      const sub = await run("bash", ["deploy/slurm/submit.sh", String(SHARDS), ...RUN_ARGS, "--out", sharded], env);
      assertEquals(sub.code, 0, `submit.sh failed\n${sub.out}\n${sub.err}`);
      const ids = /submitted: shards (\d+), merge (\d+), shards (\d+), merge (\d+)/.exec(sub.out);
      assert(ids, `no job ids in\n${sub.out}`);
      const [, s1, m1, s2, m2] = ids;

      // every job must complete; a failed one (or a dependency that can no longer be met) ends the wait
      await cluster.until("the final merge job", async () => {
        for (const id of [s1, m1, s2, m2]) {
          for (const j of await jobState(id, env)) {
            if (/FAIL|CANCEL|TIMEOUT|OUT_OF_ME|PREEMPT|BOOT_FAIL|DEADLINE/.test(j.state) || j.reason === "DependencyNeverSatisfied") {
              throw new Error(`job ${id}: ${j.state} ${j.reason}\n${await cluster.logs()}`);
            }
          }
        }
        return (await jobState(m2, env)).every((j) => j.state === "COMPLETED");
      }, 600);
      for (const id of [s1, s2]) {
        const tasks = await jobState(id, env);
        assertEquals(tasks.map((t) => t.state), Array(SHARDS).fill("COMPLETED"), `array job ${id}`);
      }
      const logs = await cluster.logs();
      assert(/01_construct: merging shards 0\.\.2 of 3/.test(logs), `the first merge did not merge 01_construct\n${logs}`);
      assert(/03_info_flow: no shards yet/.test(logs), `the first merge should name 03_info_flow's shards as the next step\n${logs}`);

      const r = await pipeline([...RUN_ARGS, "--out", whole]);
      assertEquals(r.code, 0, describe(r));

      for (const stage of STAGES) {
        const a = join(sharded, stage), b = join(whole, stage);
        assertEquals(await filesOf(a), await filesOf(b), `${stage}: the same files (no shards/ or .work/ left)`);
        for (const f of await filesOf(b)) {
          if (f === "manifest.json") continue;
          const x = await Deno.readFile(join(a, f)), y = await Deno.readFile(join(b, f));
          assert(x.length === y.length && x.every((v, i) => v === y[i]), `${stage}/${f} differs from the one-process run`);
        }
        const ma = JSON.parse(await Deno.readTextFile(join(a, "manifest.json")));
        const mb = JSON.parse(await Deno.readTextFile(join(b, "manifest.json")));
        assertEquals(ma.cacheKey, mb.cacheKey, stage);
        assertEquals(ma.outputs, mb.outputs, stage);
        if (stage === "02_compare") continue;
        // each shard ran as its own array task, with one GPU of the node allocated to it
        const shards = ma.info.shards;
        assertEquals(shards.count, SHARDS, stage);
        assertEquals(shards.shards.map((s: { shard: string }) => s.shard), ["0/3", "1/3", "2/3"], stage);
        shards.shards.forEach((s: { env: Record<string, string> }, i: number) => {
          assertEquals(s.env.SLURM_ARRAY_TASK_ID, String(i), stage);
          assert(/^\d$/.test(s.env.CUDA_VISIBLE_DEVICES ?? ""), `${stage} shard ${i}: one GPU (CUDA_VISIBLE_DEVICES=${s.env.CUDA_VISIBLE_DEVICES})`);
          assertEquals(s.env.DENO_WEBGPU_BACKEND, "vulkan", "deploy/gpu-env.sh pins the Vulkan backend");
        });
      }
    } finally {
      await cluster.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
