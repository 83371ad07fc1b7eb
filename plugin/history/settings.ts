import { isGranted } from '../security/grants.js'

export interface HistorySettings {
  /** Messages kept; 0 means the channel keeps no history and its messages carry no offset. */
  size: number
  /** How long the history outlives the channel's last publish, in milliseconds. */
  ttl: number
}

export interface HistoryRule extends HistorySettings {
  /** A channel name, or a prefix followed by `*`. */
  channels: string
}

/** The history settings of each channel: the first rule whose pattern matches, or the default. */
export function historySettings (defaults: HistorySettings, rules: readonly HistoryRule[]): (channel: string) => HistorySettings {
  const fallback = { size: defaults.size, ttl: defaults.ttl }
  const compiled = rules.map((rule) => ({ patterns: [rule.channels], settings: { size: rule.size, ttl: rule.ttl } }))
  return (channel) => {
    for (const { patterns, settings } of compiled) if (isGranted(patterns, channel)) return settings
    return fallback
  }
}
