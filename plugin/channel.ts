import { Type } from '@sinclair/typebox'

export const CHANNEL_MAX_LENGTH = 128

export const ChannelName = Type.String({
  // A personal channel is `@` and an identity, written with `~XX` for other characters (plugin/personal.ts).
  pattern: `^(?:[A-Za-z0-9_.:-]{1,${CHANNEL_MAX_LENGTH}}|@[A-Za-z0-9_.:~-]{1,${CHANNEL_MAX_LENGTH - 1}})$`,
  description: 'A channel name: 1-128 characters of A-Z a-z 0-9 _ - . :, or a personal channel, @ and an identity'
})

const channelRegex = new RegExp(ChannelName.pattern as string)

export function isValidChannel (value: unknown): value is string {
  return typeof value === 'string' && channelRegex.test(value)
}
