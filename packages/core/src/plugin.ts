/** What every plugin object carries so registries can check it by shape (DESIGN.md, decision 11). */

export interface ContractVersioned {
  /** The @fulgur/core contract major version the plugin was built against. */
  readonly contractVersion: number;
}
