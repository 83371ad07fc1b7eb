import { BlockList, isIP } from 'node:net'

// The networks of the metricsAllow option: read with the options, checked on each scrape.

/** `10.0.0.0/8`, `2001:db8::/32` or a single address; checked when the options are read. */
export function scraperList (entries: readonly string[]): BlockList {
  const list = new BlockList()
  for (const entry of entries) {
    const [address, bits] = entry.split('/')
    const version = isIP(address)
    const type = version === 6 ? 'ipv6' : 'ipv4'
    if (bits === undefined) list.addAddress(address, type)
    else list.addSubnet(address, Number(bits), type)
  }
  return list
}

export function isScraperEntry (entry: string): boolean {
  const [address, bits, extra] = entry.split('/')
  const version = isIP(address)
  if (version === 0 || extra !== undefined) return false
  return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (version === 4 ? 32 : 128))
}

/** Whether `address` parses as an IP address (not a host name that starts like one) and is in `list`. */
export function isInList (list: BlockList, address: string | undefined): boolean {
  if (address === undefined) return false
  const version = isIP(address)
  return version !== 0 && list.check(address, version === 4 ? 'ipv4' : 'ipv6')
}
