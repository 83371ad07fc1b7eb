// Reads what the kernel knows about processes and the machine, from /proc (Linux only).
import { readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { cpus, release, totalmem } from 'node:os'

function clockTicks (): number {
  try {
    const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    return Number.isFinite(ticks) && ticks > 0 ? ticks : 100
  } catch {
    return 100
  }
}

const TICKS = clockTicks()

export interface CpuTimes {
  /** Seconds in user mode. */
  user: number
  /** Seconds in the kernel on the process's behalf. */
  system: number
}

/** CPU seconds a process has used so far (all its threads), or undefined once it is gone. */
export function processCpu (pid: number): CpuTimes | undefined {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1')
  } catch {
    return undefined
  }
  // Field 2, the command name, is in parentheses and may hold spaces: count from the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  // fields[0] is field 3 (state), so utime (14) and stime (15) are fields[11] and fields[12].
  return { user: Number(fields[11]) / TICKS, system: Number(fields[12]) / TICKS }
}

/** Resident set size in bytes, or undefined once the process is gone. */
export function processRss (pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))
    return match === null ? undefined : Number(match[1]) * 1024
  } catch {
    return undefined
  }
}

/** Seconds of busy and total CPU time of the whole machine, summed over its cores. */
export function machineCpu (): { busy: number, total: number } {
  const line = readFileSync('/proc/stat', 'latin1').split('\n')[0] as string
  // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1, 9).map(Number) as number[]
  const busy = (user as number) + (nice as number) + (system as number) + (irq as number) + (softirq as number) + (steal as number)
  return { busy: busy / TICKS, total: (busy + (idle as number) + (iowait as number)) / TICKS }
}

/** The soft and hard limits on open files of this process (children inherit them). */
export function openFileLimit (): { soft: number, hard: number } {
  const match = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'latin1'))
  const parse = (value: string | undefined): number => value === undefined || value === 'unlimited' ? Infinity : Number(value)
  return { soft: parse(match?.[1]), hard: parse(match?.[2]) }
}

/** How many local ports the kernel hands out to outgoing connections. */
export function ephemeralPorts (): number {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'latin1').trim().split(/\s+/).map(Number)
    return (high as number) - (low as number) + 1
  } catch {
    return 28232
  }
}

export interface MachineInfo {
  cpuModel: string
  cores: number
  memoryGiB: number
  kernel: string
  node: string
}

export function machineInfo (): MachineInfo {
  let cpuModel = cpus()[0]?.model ?? 'unknown'
  try {
    const match = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'latin1'))
    if (match !== null) cpuModel = (match[1] as string).trim()
  } catch {}
  return {
    cpuModel,
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version
  }
}
