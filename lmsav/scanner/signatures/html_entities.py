"""Named character references ClamAV's HTML normaliser decodes, with their code points.

The SGML entity sets (ISO 8879 Latin, Greek, symbols, HTML 4) as libclamav lists them; names are
case-sensitive and a name not listed here stays as written. Stored as ``name=hex`` pairs.
"""

from __future__ import annotations

_TABLE = """
AElig=c6 Aacgr=386 Aacute=c1 Acirc=c2 Acy=410 Agr=391 Agrave=c0 Alpha=391 Aring=c5 Atilde=c3
Auml=c4 Barwed=2306 Bcy=411 Beta=392 Bgr=392 CHcy=427 Cap=22d2 Ccedil=c7 Chi=3a7 Cup=22d3
DJcy=402 DScy=405 DZcy=40f Dagger=2021 Dcy=414 Delta=394 Dgr=394 Dot=a8 DotDot=20dc EEacgr=389
EEgr=397 ETH=d0 Eacgr=388 Eacute=c9 Ecirc=ca Ecy=42d Egr=395 Egrave=c8 Epsilon=395 Eta=397
Euml=cb Fcy=424 GJcy=403 Gamma=393 Gcy=413 Gg=22d9 Ggr=393 Gt=226b HARDcy=42a IEcy=415 IOcy=401
Iacgr=38a Iacute=cd Icirc=ce Icy=418 Idigr=3aa Igr=399 Igrave=cc Iota=399 Iukcy=406 Iuml=cf
Jcy=419 Jsercy=408 Jukcy=404 KHcy=425 KHgr=3a7 KJcy=40c Kappa=39a Kcy=41a Kgr=39a LJcy=409
Lambda=39b Lcy=41b Lgr=39b Ll=22d8 Lt=226a Mcy=41c Mgr=39c Mu=39c NJcy=40a Ncy=41d Ngr=39d
Ntilde=d1 Nu=39d OElig=152 OHacgr=38f OHgr=3a9 Oacgr=38c Oacute=d3 Ocirc=d4 Ocy=41e Ogr=39f
Ograve=d2 Omega=3a9 Omicron=39f Oslash=d8 Otilde=d5 Ouml=d6 PHgr=3a6 PSgr=3a8 Pcy=41f Pgr=3a0
Phi=3a6 Pi=3a0 Prime=2033 Psi=3a8 Rcy=420 Rgr=3a1 Rho=3a1 SHCHcy=429 SHcy=428 SOFTcy=42c
Scaron=160 Scy=421 Sgr=3a3 Sigma=3a3 Sub=22d0 Sup=22d1 THORN=de THgr=398 TSHcy=40b TScy=426
Tau=3a4 Tcy=422 Tgr=3a4 Theta=398 Uacgr=38e Uacute=da Ubrcy=40e Ucirc=db Ucy=423 Udigr=3ab
Ugr=3a5 Ugrave=d9 Upsi=3d2 Upsilon=3a5 Uuml=dc Vcy=412 Vdash=22a9 Verbar=2016 Vvdash=22aa
Xgr=39e Xi=39e YAcy=42f YIcy=407 YUcy=42e Yacute=dd Ycy=42b Yuml=178 ZHcy=416 Zcy=417 Zeta=396
Zgr=396 aacgr=3ac aacute=e1 acirc=e2 acute=b4 acy=430 aelig=e6 agr=3b1 agrave=e0 alefsym=2135
aleph=2135 alpha=3b1 amalg=2a3f amp=26 and=2227 ang=2220 ang90=221f angmsd=2221 angsph=2222
angst=212b ap=2248 ape=224a apos=27 aring=e5 ast=2a asymp=2248 atilde=e3 auml=e4 barwed=2305
bcong=224c bcy=431 bdquo=201e becaus=2235 bepsi=3f6 bernou=212c beta=3b2 beth=2136 bgr=3b2
blank=2423 blk12=2592 blk14=2591 blk34=2593 block=2588 bottom=22a5 bowtie=22c8 boxDL=2557
boxDR=2554 boxDl=2556 boxDr=2553 boxH=2550 boxHD=2566 boxHU=2569 boxHd=2564 boxHu=2567
boxUL=255d boxUR=255a boxUl=255c boxUr=2559 boxV=2551 boxVH=256c boxVL=2563 boxVR=2560
boxVh=256b boxVl=2562 boxVr=255f boxdL=2555 boxdR=2552 boxdl=2510 boxdr=250c boxh=2500
boxhD=2565 boxhU=2568 boxhd=252c boxhu=2534 boxuL=255b boxuR=2558 boxul=2518 boxur=2514
boxv=2502 boxvH=256a boxvL=2561 boxvR=255e boxvh=253c boxvl=2524 boxvr=251c bprime=2035
breve=2d8 brvbar=a6 bsim=223d bsime=22cd bsol=5c bull=2022 bump=224e bumpe=224f cap=2229
caret=2041 caron=2c7 ccedil=e7 cedil=b8 cent=a2 chcy=447 check=2713 chi=3c7 cir=25cb circ=2c6
cire=2257 clubs=2663 colon=3a colone=2254 comma=2c commat=40 comp=2201 compfn=2218 cong=2245
conint=222e coprod=2210 copy=a9 copysr=2117 crarr=21b5 cross=2717 cuepr=22de cuesc=22df cup=222a
cupre=227c curren=a4 cuvee=22ce cuwed=22cf dArr=21d3 dagger=2020 daleth=2138 darr=2193 dash=2010
dashv=22a3 dblac=2dd dcy=434 deg=b0 delta=3b4 dgr=3b4 diam=22c4 diams=2666 die=a8 divide=f7
divonx=22c7 djcy=452 dlcorn=231e dlcrop=230d dollar=24 dot=2d9 drcorn=231f drcrop=230c dscy=455
dtri=25bf dtrif=25be dzcy=45f eDot=2251 eacgr=3ad eacute=e9 ecir=2256 ecirc=ea ecolon=2255
ecy=44d eeacgr=3ae eegr=3b7 efDot=2252 egr=3b5 egrave=e8 egs=2a96 ell=2113 els=2a95 empty=2205
emsp=2003 emsp13=2004 emsp14=2005 ensp=2002 epsi=3f5 epsilon=3b5 epsis=3f5 epsiv=3b5 equals=3d
equiv=2261 erDot=2253 esdot=2250 eta=3b7 eth=f0 euml=eb euro=20ac excl=21 exist=2203 fcy=444
female=2640 ffilig=fb03 fflig=fb00 ffllig=fb04 filig=fb01 flat=266d fllig=fb02 fnof=192
forall=2200 fork=22d4 frac12=bd frac13=2153 frac14=bc frac15=2155 frac16=2159 frac18=215b
frac23=2154 frac25=2156 frac34=be frac35=2157 frac38=215c frac45=2158 frac56=215a frac58=215d
frac78=215e frasl=2044 frown=2322 gE=2267 gEl=2a8c gamma=3b3 gammad=3dd gap=2a86 gcy=433 ge=2265
gel=22db ges=2a7e ggr=3b3 gimel=2137 gjcy=453 gl=2277 grave=60 gsdot=22d7 gsim=2273 gt=3e
hArr=21d4 hairsp=200a half=bd hamilt=210b hardcy=44a harr=2194 hearts=2665 hellip=2026
horbar=2015 hybull=2043 hyphen=2010 iacgr=3af iacute=ed icirc=ee icy=438 idiagr=390 idigr=3ca
iecy=435 iexcl=a1 iff=21d4 igr=3b9 igrave=ec image=2111 incare=2105 infin=221e inodot=131
int=222b intcal=22ba iocy=451 iota=3b9 iquest=bf isin=2208 iukcy=456 iuml=ef jcy=439 jnodot=6a
jsercy=458 jukcy=454 kappa=3ba kappav=3f0 kcy=43a kgr=3ba khcy=445 khgr=3c7 kjcy=45c lArr=21d0
lE=2266 lEg=2a8b lagran=2112 lambda=3bb lang=2329 lap=2a85 laquo=ab larr=2190 lceil=2308 lcub=7b
lcy=43b ldot=22d6 ldquo=201c ldquor=201e le=2264 leg=22da les=2a7d lfloor=230a lg=2276 lgr=3bb
lhblk=2584 ljcy=459 lowast=2217 lowbar=5f loz=25ca lozf=29eb lpar=28 lpargt=29a0 lrm=200e
lsaquo=2039 lsim=2272 lsqb=5b lsquo=2018 lsquor=201a lt=3c lthree=22cb ltimes=22c9 ltri=25c3
ltrie=22b4 ltrif=25c2 macr=af male=2642 malt=2720 marker=25ae mcy=43c mdash=2014 mgr=3bc
micro=b5 mid=2223 middot=b7 minus=2212 minusb=229f mldr=2026 mnplus=2213 models=22a7 mu=3bc
nabla=2207 natur=266e nbsp=a0 ncy=43d ndash=2013 ne=2260 nexist=2204 ngr=3bd ni=220b njcy=45a
nldr=2025 not=ac notin=2209 nsub=2284 ntilde=f1 nu=3bd num=23 numero=2116 numsp=2007 oS=24c8
oacgr=3cc oacute=f3 oast=229b ocir=229a ocirc=f4 ocy=43e odash=229d odot=2299 oelig=153 ogon=2db
ogr=3bf ograve=f2 ohacgr=3ce ohgr=3c9 ohm=2126 oline=203e omega=3c9 omicron=3bf ominus=2296
oplus=2295 or=2228 order=2134 ordf=aa ordm=ba oslash=f8 osol=2298 otilde=f5 otimes=2297 ouml=f6
par=2225 para=b6 part=2202 pcy=43f percnt=25 period=2e permil=2030 perp=22a5 pgr=3c0 phgr=3c6
phi=3c6 phis=3d5 phiv=3c6 phmmat=2133 phone=260e pi=3c0 piv=3d6 planck=210f plus=2b plusb=229e
plusdo=2214 plusmn=b1 pound=a3 pr=227a prap=2ab7 pre=2aaf prime=2032 prod=220f prop=221d
prsim=227e psgr=3c8 psi=3c8 puncsp=2008 quest=3f quot=22 rArr=21d2 radic=221a rang=232a raquo=bb
rarr=2192 rceil=2309 rcub=7d rcy=440 rdquo=201d rdquor=201d real=211c rect=25ad reg=ae
rfloor=230b rgr=3c1 rho=3c1 rhov=3f1 ring=2da rlm=200f rpar=29 rpargt=2994 rsaquo=203a rsqb=5d
rsquo=2019 rsquor=2019 rthree=22cc rtimes=22ca rtri=25b9 rtrie=22b5 rtrif=25b8 rx=211e
samalg=2210 sbquo=201a sbsol=fe68 sc=227b scap=2ab8 scaron=161 sccue=227d sce=2ab0 scsim=227f
scy=441 sdot=22c5 sdotb=22a1 sect=a7 semi=3b setmn=2216 sext=2736 sfgr=3c2 sfrown=2322 sgr=3c3
sharp=266f shchcy=449 shcy=448 shy=ad sigma=3c3 sigmaf=3c2 sigmav=3c2 sim=223c sime=2243
smid=2223 smile=2323 softcy=44c sol=2f spades=2660 spar=2225 sqcap=2293 sqcup=2294 sqsub=228f
sqsube=2291 sqsup=2290 sqsupe=2292 squ=25a1 square=25a1 squf=25aa ssetmn=2216 ssmile=2323
sstarf=22c6 star=2606 starf=2605 sub=2282 subE=2ac5 sube=2286 sum=2211 sung=266a sup=2283
sup1=b9 sup2=b2 sup3=b3 supE=2ac6 supe=2287 szlig=df target=2316 tau=3c4 tcy=442 tdot=20db
telrec=2315 tgr=3c4 there4=2234 theta=3b8 thetas=3b8 thetasym=3d1 thetav=3d1 thgr=3b8
thinsp=2009 thkap=2248 thksim=223c thorn=fe tilde=2dc times=d7 timesb=22a0 top=22a4 tprime=2034
trade=2122 trie=225c tscy=446 tshcy=45b twixt=226c uArr=21d1 uacgr=3cd uacute=fa uarr=2191
ubrcy=45e ucirc=fb ucy=443 udiagr=3b0 udigr=3cb ugr=3c5 ugrave=f9 uhblk=2580 ulcorn=231c
ulcrop=230f uml=a8 uplus=228e upsi=3c5 upsih=3d2 upsilon=3c5 urcorn=231d urcrop=230e utri=25b5
utrif=25b4 uuml=fc vDash=22a8 vcy=432 vdash=22a2 veebar=22bb vellip=22ee verbar=7c vltri=22b2
vprime=2032 vprop=221d vrtri=22b3 wedgeq=2259 weierp=2118 wreath=2240 xcirc=25ef xdtri=25bd
xgr=3be xi=3be xutri=25b3 yacute=fd yacy=44f ycy=44b yen=a5 yicy=457 yucy=44e yuml=ff zcy=437
zeta=3b6 zgr=3b6 zhcy=436 zwj=200d zwnj=200c
"""

ENTITIES: dict[bytes, int] = {
    name.encode(): int(code, 16)
    for name, _, code in (item.partition("=") for item in _TABLE.split())
}
