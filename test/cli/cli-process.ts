import { spawn, type ChildProcess } from 'node:child_process';
import { CLI, ROOT } from '../../src/testing/processes.js';

/** A log line of the CLI: pino JSON (msg, level, fields). */
export type LogLine = Record<string, unknown> & { msg?: string };

/**
 * The built `mdb-runtime` running as a child process. Every wait is on an event (a line on stdout or
 * stderr, the exit); the timeouts only turn a hang into a failure that shows the output.
 */
export class CliProcess {
  readonly child: ChildProcess;
  readonly lines: LogLine[] = [];
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly listeners = new Set<() => void>();
  private closed = false;

  private constructor(args: string[], env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let partial = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      this.stdout += d.toString();
      partial += d.toString();
      const parts = partial.split('\n');
      partial = parts.pop()!;
      for (const line of parts) {
        if (!line.trim()) continue;
        try {
          this.lines.push(JSON.parse(line) as LogLine);
        } catch {
          this.lines.push({ msg: line, raw: true });
        }
      }
      this.notify();
    });
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
      this.notify();
    });
    // 'close' comes after the exit and after stdout/stderr ended, so all output is in by then.
    this.exited = new Promise((resolve) =>
      this.child.once('close', (code, signal) => {
        this.closed = true;
        this.notify();
        resolve({ code, signal });
      }),
    );
  }

  /** Spawns `node dist/cli/main.js ...args` with an environment free of the caller's MDB_* variables. */
  static start(args: string[], env: Record<string, string> = {}): CliProcess {
    const base: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MDB_')) base[k] = v;
    return new CliProcess(args, { ...base, ...env });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves with the first log line matching `predicate` (already seen or to come). */
  waitForLine(predicate: (line: LogLine) => boolean, what: string, timeoutMS = 20_000): Promise<LogLine> {
    return this.waitFor(() => this.lines.find(predicate), what, timeoutMS);
  }

  /** Resolves with the startup line ("mdb-runtime ... listening on ..."). */
  started(timeoutMS = 20_000): Promise<LogLine> {
    return this.waitForLine((l) => typeof l.msg === 'string' && / listening on /.test(l.msg), 'the startup line', timeoutMS);
  }

  /** Resolves with the exit once the process ended; fails if it is still running after `timeoutMS`. */
  async exit(timeoutMS = 20_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`still running after ${timeoutMS} ms\n${this.output()}`)), timeoutMS);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills the process if it still runs (cleanup for failed tests). */
  async kill(): Promise<void> {
    if (this.running) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  output(): string {
    return `--- stdout ---\n${this.stdout}\n--- stderr ---\n${this.stderr}`;
  }

  private waitFor<T>(probe: () => T | undefined, what: string, timeoutMS: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const value = probe();
        if (value !== undefined) {
          done();
          resolve(value);
        } else if (this.closed) {
          done();
          reject(new Error(`process exited (code ${this.child.exitCode}) before ${what}\n${this.output()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${what} within ${timeoutMS} ms\n${this.output()}`));
      }, timeoutMS);
      const done = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }
}
